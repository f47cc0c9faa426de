package resolve

import (
	"context"
	"errors"
	"time"
)

var _ Watcher = (*DNS)(nil)

// Watch follows a service in DNS. DNS pushes nothing, so Watch polls: it
// asks again whenever the answer's TTL runs out (at least MinTTL apart) and
// sends the endpoint set when its addresses or keys change. A change thus
// reaches watchers, and the flows that follow them, within one TTL of its
// publication: publish short TTLs for services that move.
//
// While refreshes fail, the last set stands (DNS serves it stale); once it
// ages past MaxStale the watch ends, closing the channel, so that a Cache
// above lets the answer expire and its next lookup reports the failure.
func (d *DNS) Watch(ctx context.Context, service string) (<-chan []Endpoint, error) {
	key, err := serviceKey("watch", service)
	if err != nil {
		return nil, err
	}
	eps, err := d.Resolve(ctx, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, asError("watch", key, err)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, &Error{Op: "watch", Service: key, Err: ErrClosed}
	}
	d.wg.Add(1)
	d.mu.Unlock()
	ch := make(chan []Endpoint, 1)
	if eps == nil {
		eps = []Endpoint{}
	}
	ch <- eps
	go d.poll(ctx, key, ch, eps)
	return ch, nil
}

func (d *DNS) poll(ctx context.Context, key string, ch chan []Endpoint, last []Endpoint) {
	defer d.wg.Done()
	defer close(ch)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wait := d.minTTL
		if len(last) > 0 {
			wait = max(last[0].TTL, d.minTTL)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-d.ctx.Done():
			return
		case <-timer.C:
		}
		eps, err := d.Resolve(ctx, key)
		switch {
		case err == nil:
		case errors.Is(err, ErrNotFound):
			eps = []Endpoint{}
		case errors.Is(err, errStaleExpired), errors.Is(err, ErrClosed):
			return
		default:
			continue // a failed refresh: the last set stands
		}
		if !sameEndpoints(eps, last) {
			select { // replace an unread set: the newest wins
			case <-ch:
			default:
			}
			ch <- eps
		}
		last = eps
	}
}

// sameEndpoints compares two sets by address and key, in any order: DNS
// draws a new SRV order at each refresh and counts TTLs down, and neither
// is a change worth pushing.
func sameEndpoints(a, b []Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
outer:
	for _, x := range a {
		for _, y := range b {
			if x.Addr == y.Addr && x.Key == y.Key {
				continue outer
			}
		}
		return false
	}
	return true
}
