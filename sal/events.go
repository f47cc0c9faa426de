package sal

import (
	"net"
	"net/netip"
	"time"
)

// EventKind says what happened to a flow or a Host.
type EventKind uint8

// Event kinds.
const (
	EventSuspended EventKind = iota + 1 // a flow lost its carrier
	EventResumed                        // a flow moved onto a new stream
	EventLost                           // a flow could not be resumed
	EventMigrated                       // a connection moved to a new local address (QUIC migration)
	EventRebound                        // the Host moved to a new socket
	EventReplaced                       // a silent connection gave way to a new one (Config.SilenceTimeout)
	EventPathDown                       // a path stopped answering, and its flows moved to another (see Config.Paths)
	EventPathUp                         // a path that had stopped answering answers again
)

func (k EventKind) String() string {
	switch k {
	case EventSuspended:
		return "suspended"
	case EventResumed:
		return "resumed"
	case EventLost:
		return "lost"
	case EventMigrated:
		return "migrated"
	case EventRebound:
		return "rebound"
	case EventReplaced:
		return "replaced"
	case EventPathDown:
		return "path down"
	case EventPathUp:
		return "path up"
	}
	return "unknown"
}

// Event reports a change in a Host's flows or paths, as data: tests and
// benchmarks read stalls and replays from it (Config.OnEvent).
type Event struct {
	Time     time.Time
	Kind     EventKind
	Service  ServiceID      // the flow's service, if the event concerns a flow
	FlowID   uint64         // 0 for Host-wide events
	Stall    time.Duration  // EventResumed: time without a carrier; EventReplaced: time unanswered
	Replayed uint64         // EventResumed: bytes sent again
	From, To netip.AddrPort // EventMigrated, EventRebound, EventResumed: the addresses involved; EventReplaced: To is the peer; EventPathDown, EventPathUp: the path's local address and the peer
	RTT      time.Duration  // EventMigrated: the path's RTT after the switch
	Err      error          // EventSuspended, EventLost, EventPathDown: the cause
}

// emit hands e to Config.OnEvent.
func (h *Host) emit(e Event) {
	if h.cfg.OnEvent == nil {
		return
	}
	e.Time = time.Now()
	h.cfg.OnEvent(e)
}

func netipAddrPortOf(a net.Addr) netip.AddrPort {
	ap, _ := addrPortOf(a)
	return ap
}
