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

// following is the one watch of a service, shared by the dialer flows
// that use it (which it moves when their endpoint is withdrawn) and by
// flows resuming to it (which it tells, so that an attempt on an old
// address is cut short). Guarded by Host.mu. However many flows a
// service has, the Host holds one watch on it.
type following struct {
	flows   map[*Conn]struct{}
	moves   map[chan struct{}]struct{} // resumes waiting for a change
	ctx     context.Context
	cancel  context.CancelFunc
	started bool // the watch is open, or being opened, outside Host.mu
}

func (f *following) idle() bool { return len(f.flows) == 0 && len(f.moves) == 0 }

// follow makes c move when its service's endpoints change, if the resolver
// can push changes: a provider that re-registers elsewhere (a Rebind, a
// new public address) pulls its flows along at once, without waiting for
// the old path to time out.
func (h *Host) follow(c *Conn) {
	h.joinFollowing(c.service, func(f *following) { f.flows[c] = struct{}{} })
}

func (h *Host) unfollow(c *Conn) {
	if !c.dialer {
		return
	}
	h.leaveFollowing(c.service.LookupName(), func(f *following) { delete(f.flows, c) })
}

// watchMoves returns a channel that ticks when id's endpoints change, and
// a function to stop; nil if the resolver cannot push changes.
func (h *Host) watchMoves(id ServiceID) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	if !h.joinFollowing(id, func(f *following) { f.moves[ch] = struct{}{} }) {
		return nil, func() {}
	}
	return ch, func() { h.leaveFollowing(id.LookupName(), func(f *following) { delete(f.moves, ch) }) }
}

// joinFollowing adds a flow or a resume (join) to id's watch, opening the
// watch if it is the first. The watch opens outside Host.mu: a remote
// resolver's Watch is a round trip, and acknowledgements, LocalAddr and
// incoming handshakes wait on that lock. It reports false if the service
// cannot be watched.
func (h *Host) joinFollowing(id ServiceID, join func(*following)) bool {
	if rule, _ := h.table.Lookup(id); rule.Action != ActionResolve {
		return false
	}
	w, ok := h.resolver.(resolve.Watcher)
	if !ok {
		return false
	}
	name := id.LookupName()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false
	}
	f := h.following[name]
	if f == nil {
		f = &following{flows: make(map[*Conn]struct{}), moves: make(map[chan struct{}]struct{})}
		f.ctx, f.cancel = context.WithCancel(h.ctx)
		h.following[name] = f
	}
	join(f)
	start := !f.started
	f.started = true
	h.mu.Unlock()
	if !start {
		return true
	}
	updates, err := w.Watch(f.ctx, name)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil || h.closed || f.ctx.Err() != nil {
		// No watch: forget the entry, so that a later flow tries again.
		if h.following[name] == f {
			delete(h.following, name)
		}
		f.cancel()
		return err == nil
	}
	h.wg.Go(func() { h.followLoop(f, name, updates) })
	return true
}

// leaveFollowing takes a flow or a resume (leave) off name's watch, and
// ends the watch when nothing is left on it.
func (h *Host) leaveFollowing(name string, leave func(*following)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.following[name]
	if f == nil {
		return
	}
	leave(f)
	if f.idle() {
		f.cancel()
		delete(h.following, name)
	}
}

func (h *Host) followLoop(f *following, name string, updates <-chan []resolve.Endpoint) {
	defer func() {
		h.mu.Lock()
		if h.following[name] == f {
			delete(h.following, name) // a later flow opens a new watch
		}
		h.mu.Unlock()
		f.cancel()
	}()
	first := true // the current set, which a new watch sends at once
	for {
		var eps []resolve.Endpoint
		var ok bool
		select {
		case <-f.ctx.Done():
			return
		case eps, ok = <-updates:
			if !ok {
				return // the resolver ended the watch; flows still resume on failure
			}
		}
		h.mu.Lock()
		if !first {
			for ch := range f.moves {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
		h.mu.Unlock()
		first = false
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
		moved := make([]*Conn, 0, len(f.flows))
		for c := range f.flows {
			moved = append(moved, c)
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
