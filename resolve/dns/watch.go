package dns

import (
	"context"
	"errors"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/endpoints"
)

var _ resolve.Watcher = (*Resolver)(nil)

// Watch follows a service in DNS. DNS pushes nothing, so Watch polls: it
// asks again whenever the answer's TTL runs out (at least MinTTL apart) and
// sends the endpoint set when its addresses or keys change. A change thus
// reaches watchers, and the flows that follow them, within one TTL of its
// publication: publish short TTLs for services that move.
//
// While refreshes fail, the last set stands (Resolve serves it stale);
// once it ages past MaxStale the watch ends, closing the channel, so that
// a resolve.Cache above lets the answer expire and its next lookup reports
// the failure.
func (d *Resolver) Watch(ctx context.Context, service string) (<-chan []resolve.Endpoint, error) {
	key, err := resolve.ServiceKey("watch", service)
	if err != nil {
		return nil, err
	}
	eps, err := d.Resolve(ctx, key)
	if err != nil && !errors.Is(err, resolve.ErrNotFound) {
		return nil, asError("watch", key, err)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, &resolve.Error{Op: "watch", Service: key, Err: resolve.ErrClosed}
	}
	d.wg.Add(1)
	d.mu.Unlock()
	ch := make(chan []resolve.Endpoint, 1)
	if eps == nil {
		eps = []resolve.Endpoint{}
	}
	ch <- eps
	go d.poll(ctx, key, ch, eps)
	return ch, nil
}

func (d *Resolver) poll(ctx context.Context, key string, ch chan []resolve.Endpoint, last []resolve.Endpoint) {
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
		case errors.Is(err, resolve.ErrNotFound):
			eps = []resolve.Endpoint{}
		case errors.Is(err, errStaleExpired), errors.Is(err, resolve.ErrClosed):
			return
		default:
			continue // a failed refresh: the last set stands
		}
		if !endpoints.Same(eps, last) {
			select { // replace an unread set: the newest wins
			case <-ch:
			default:
			}
			ch <- eps
		}
		last = eps
	}
}

// asError wraps err in a *resolve.Error unless it already holds one, so
// that stacked resolvers do not say the same twice.
func asError(op, service string, err error) error {
	if e := (*resolve.Error)(nil); errors.As(err, &e) {
		return err
	}
	return &resolve.Error{Op: op, Service: service, Err: err}
}
