package emu

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/mobility/trace"
)

// PathConfig configures a path of either form: the in-memory Path and the
// UDP Relay. The zero value is a perfect path.
type PathConfig struct {
	// Up and Down configure the two directions.
	Up, Down LinkConfig
	// Hook, if set, sees every datagram before the link model does.
	Hook Hook
	// OnEvent, if set, receives every Event, one call at a time, on the
	// goroutine that caused it. It must not block, nor call the path's
	// methods.
	OnEvent func(Event)
}

// shaper is what both forms share: the two Link models, the hook, the
// events, blackouts, and the controls built on them, which Path and Relay
// get by embedding it. The forms add addresses and the waiting.
type shaper struct {
	links   [2]*Link
	flush   [2]func()          // drop what a direction holds in flight
	remap   func(newAddr bool) // forget every mapping; the next ones on a new address if newAddr
	hook    atomic.Pointer[Hook]
	onEvent func(Event)
	evMu    sync.Mutex
}

func (s *shaper) init(cfg PathConfig, seed uint64) {
	// Each direction has its own random source, so that what one
	// direction carries never changes the other's decisions.
	s.links[Up] = NewLink(cfg.Up, seed*2)
	s.links[Down] = NewLink(cfg.Down, seed*2+1)
	s.onEvent = cfg.OnEvent
	if cfg.Hook != nil {
		s.hook.Store(&cfg.Hook)
	}
}

func (s *shaper) emit(e Event) {
	if s.onEvent == nil {
		return
	}
	s.evMu.Lock()
	defer s.evMu.Unlock()
	s.onEvent(e)
}

// drop records a datagram dropped outside the link model.
func (s *shaper) drop(now time.Time, dir Dir, size int, why DropReason) {
	s.links[dir].count(why)
	s.emit(Event{Time: now, Kind: EventDrop, Dir: dir, Size: size, Reason: why})
}

// offer runs a datagram through the hook and the link model, and returns
// when it leaves the link, or false if it is dropped.
func (s *shaper) offer(now time.Time, dir Dir, from, to netip.AddrPort, data []byte) (time.Time, bool) {
	var extra time.Duration
	if h := s.hook.Load(); h != nil {
		v := (*h)(Packet{Dir: dir, From: from, To: to, Data: data})
		if v.Drop {
			s.drop(now, dir, len(data), DropHook)
			return time.Time{}, false
		}
		extra = max(v.Delay, 0)
	}
	at, why := s.links[dir].Admit(now, len(data))
	if why != NotDropped {
		s.emit(Event{Time: now, Kind: EventDrop, Dir: dir, Size: len(data), Reason: why})
		return time.Time{}, false
	}
	at = at.Add(extra)
	s.emit(Event{Time: now, Kind: EventForward, Dir: dir, Size: len(data), Delay: at.Sub(now)})
	return at, true
}

// Link returns the model of one direction, for its configuration and
// counters.
func (s *shaper) Link(dir Dir) *Link { return s.links[dir] }

// Configure sets one direction's link.
func (s *shaper) Configure(dir Dir, cfg LinkConfig) {
	s.links[dir].Set(cfg)
	s.emit(Event{Time: time.Now(), Kind: EventLink, Dir: dir, Link: cfg})
}

// SetLink sets both directions from a trace's path-wide figures: each
// gets half the RTT and half the jitter.
func (s *shaper) SetLink(l trace.Link) {
	cfg := LinkConfigOf(l)
	s.Configure(Up, cfg)
	s.Configure(Down, cfg)
}

// SetHook replaces the hook; nil removes it.
func (s *shaper) SetHook(h Hook) {
	if h == nil {
		s.hook.Store(nil)
		return
	}
	s.hook.Store(&h)
}

// Blackout drops every datagram in both directions for d, including
// those in flight when it begins. Addresses do not change.
func (s *shaper) Blackout(d time.Duration) {
	now := time.Now()
	s.emit(Event{Time: now, Kind: EventBlackout, Delay: d})
	s.blackout(now, d)
}

// Handover drops everything for outage and gives every client a new
// mapping on a new address: the server sees the client anew, as after a
// change of cell. The old mappings are dead. (A Relay closes their
// sockets, and stays on 127.0.0.1 with new ports where the system has no
// other loopback address.)
func (s *shaper) Handover(outage time.Duration) {
	now := time.Now()
	s.remap(true)
	s.emit(Event{Time: now, Kind: EventHandover, Delay: outage})
	s.blackout(now, outage)
}

// Rebind gives every client a new port on its mapping's address, as a NAT
// does when a mapping times out; nothing is dropped but what is sent to
// the old mappings.
func (s *shaper) Rebind() {
	s.remap(false)
	s.emit(Event{Time: time.Now(), Kind: EventRebind})
}

// blackout drops everything for d, in both directions, including what is
// in flight.
func (s *shaper) blackout(now time.Time, d time.Duration) {
	for dir := range s.links {
		s.links[dir].Blackout(now, d)
		if s.flush[dir] != nil {
			s.flush[dir]()
		}
	}
}
