package mobility

import (
	"context"
	"net/netip"
	"time"
)

// Change summarizes one difference between two successive interface
// States. Its slices and States are shared between subscribers: read them,
// do not modify them.
type Change struct {
	Time     time.Time
	Old, New State

	// Preferred is the Policy's pick in New, the zero Addr if New has no
	// address the Policy allows. OldPreferred is the pick in Old.
	Preferred, OldPreferred netip.Addr

	// PreferredChanged reports Preferred != OldPreferred: sockets bound to
	// OldPreferred should be rebound (sal.Host.Rebind).
	PreferredChanged bool

	// Removed and Added are the usable addresses (State.Addrs) gone since
	// Old and new in New. A removed address breaks the paths that use it
	// even when the preferred address stays the same.
	Removed, Added []netip.Addr
}

type subscription struct {
	ch   chan Change // capacity 1; see Subscribe
	stop func() bool // stops the context.AfterFunc
}

// Subscribe returns a channel that receives every Change from now on. The
// channel holds one Change; if the subscriber has not taken it when the
// next one comes, the two are merged (Old from the first, New from the
// second, Removed, Added and PreferredChanged recomputed), so a slow
// subscriber sees the net difference since the last Change it took, never
// a stale one, and never blocks the Monitor. Subscribe before reading
// State or Preferred, and no change is missed in between.
//
// The channel is closed when ctx is done or the Monitor is closed.
func (m *Monitor) Subscribe(ctx context.Context) <-chan Change {
	s := &subscription{ch: make(chan Change, 1)}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || ctx.Err() != nil {
		close(s.ch)
		return s.ch
	}
	m.subs[s] = struct{}{}
	s.stop = context.AfterFunc(ctx, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.subs[s]; ok {
			delete(m.subs, s)
			close(s.ch)
		}
	})
	return s.ch
}

// send delivers c without blocking: if the subscriber has not taken the
// previous Change yet, the two are merged into one. Called with m.mu held,
// which makes it the channel's only sender.
func (s *subscription) send(c Change) {
	select {
	case prev := <-s.ch:
		c = merge(prev, c)
	default:
	}
	s.ch <- c // empty now, and no other sender: never blocks
}

// merge returns the Change from a.Old to b.New: what a subscriber that
// missed the intermediate State needs to know.
func merge(a, b Change) Change {
	c := Change{
		Time:             b.Time,
		Old:              a.Old,
		New:              b.New,
		Preferred:        b.Preferred,
		OldPreferred:     a.OldPreferred,
		PreferredChanged: b.Preferred != a.OldPreferred,
	}
	oldAddrs, newAddrs := c.Old.Addrs(), c.New.Addrs()
	c.Removed, c.Added = minus(oldAddrs, newAddrs), minus(newAddrs, oldAddrs)
	return c
}
