package sal

import (
	"context"
	"errors"
	"net/netip"

	"github.com/roamnet/roam/resolve"
)

// errEndpointWithdrawn suspends a flow whose endpoint its service no
// longer lists: the provider moved, so the flow resumes where it went.
var errEndpointWithdrawn = errors.New("sal: the service's endpoint was withdrawn")

// following watches one service for the dialer flows that use it.
type following struct {
	flows  map[*Conn]struct{}
	cancel context.CancelFunc
}

// follow makes c move when its service's endpoints change, if the resolver
// can push changes: a provider that re-registers elsewhere (a Rebind, a
// new public address) pulls its flows along at once, without waiting for
// the old path to time out.
func (h *Host) follow(c *Conn) {
	if rule, _ := h.table.Lookup(c.service); rule.Action != ActionResolve {
		return
	}
	w, ok := h.resolver.(resolve.Watcher)
	if !ok {
		return
	}
	name := c.service.LookupName()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	if f := h.following[name]; f != nil {
		f.flows[c] = struct{}{}
		return
	}
	ctx, cancel := context.WithCancel(h.ctx)
	updates, err := w.Watch(ctx, name)
	if err != nil {
		cancel()
		return
	}
	h.following[name] = &following{flows: map[*Conn]struct{}{c: {}}, cancel: cancel}
	h.wg.Add(1)
	go h.followLoop(ctx, name, updates)
}

func (h *Host) unfollow(c *Conn) {
	if !c.dialer {
		return
	}
	name := c.service.LookupName()
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.following[name]
	if f == nil {
		return
	}
	delete(f.flows, c)
	if len(f.flows) == 0 {
		f.cancel()
		delete(h.following, name)
	}
}

func (h *Host) followLoop(ctx context.Context, name string, updates <-chan []resolve.Endpoint) {
	defer h.wg.Done()
	for {
		var eps []resolve.Endpoint
		var ok bool
		select {
		case <-ctx.Done():
			return
		case eps, ok = <-updates:
			if !ok {
				return // the resolver ended the watch; flows still resume on failure
			}
		}
		if len(eps) == 0 {
			// Withdrawn, perhaps only while the provider re-registers: the
			// flows stay where they are until a new address appears or
			// their path fails.
			continue
		}
		listed := make(map[netip.AddrPort]bool, len(eps))
		keys := make(map[resolve.Fingerprint]bool, len(eps)) // the zero key: someone unpinned
		for _, ep := range eps {
			listed[addrKey(dialable(ep.Addr))] = true
			keys[ep.Key] = true
		}
		h.mu.Lock()
		var moved []*Conn
		if f := h.following[name]; f != nil {
			for c := range f.flows {
				moved = append(moved, c)
			}
		}
		h.mu.Unlock()
		for _, c := range moved {
			c.mu.Lock()
			car := c.car
			// A set in which no endpoint could hold the flow's other end
			// (all pinned to other keys) says the provider is gone, or
			// only that a health checker left it out, not that it moved:
			// resuming elsewhere cannot work, so the flow stays until its
			// own path fails.
			withdrawn := car != nil && car.peer != nil && !listed[addrKey(car.peer.addr)] &&
				(keys[c.peerKey] || keys[resolve.Fingerprint{}])
			if withdrawn {
				// Resume straight to where the watch says the service
				// is: a cache in front of the resolver may not know yet.
				c.moveTo = eps
			}
			c.mu.Unlock()
			if withdrawn {
				c.suspend(car, errEndpointWithdrawn)
			}
		}
	}
}

// addrKey is an AddrPort with any IPv4-in-IPv6 mapping removed, so that
// equal addresses compare equal.
func addrKey(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
