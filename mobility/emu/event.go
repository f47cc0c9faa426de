package emu

import (
	"net/netip"
	"strconv"
	"time"
)

// Dir is a direction of a path.
type Dir uint8

// The two directions.
const (
	Up   Dir = iota // from the client to the server
	Down            // from the server to the client
)

func (d Dir) String() string {
	switch d {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return "Dir(" + strconv.Itoa(int(d)) + ")"
}

// Packet is a datagram shown to a Hook. Data is only valid during the
// call; a hook that keeps it must copy it.
type Packet struct {
	Dir Dir
	// From and To are the addresses as the sender wrote them: for Up, the
	// client's own address and the server's address as the client knows
	// it; for Down, the server's address and the client's mapping.
	From, To netip.AddrPort
	Data     []byte
}

// Verdict is a Hook's decision about a datagram.
type Verdict struct {
	Drop  bool          // drop it, with DropHook
	Delay time.Duration // else add this delay after the link's own
}

// Hook sees every datagram before the link model does, in the manner of
// quic-go's integration-test proxy: it may drop the datagram or delay it
// further. It runs on the sender's goroutine and must be quick and safe
// for concurrent use.
type Hook func(Packet) Verdict

// EventKind says what an Event records.
type EventKind uint8

// The kinds of Event.
const (
	// EventForward: a datagram was admitted; it leaves the link after Delay.
	EventForward EventKind = iota + 1
	// EventDrop: a datagram was dropped for Reason.
	EventDrop
	// EventLink: a direction got a new configuration.
	EventLink
	// EventBlackout: everything is dropped for Delay.
	EventBlackout
	// EventHandover: everything is dropped for Delay, and the client's
	// mappings are gone; the next datagram from a client gets a new one.
	EventHandover
	// EventRebind: the client's mappings are gone, as when a NAT rebinds.
	EventRebind
	// EventMapping: the client at Old got the mapping New, the address
	// the server sees it at.
	EventMapping
	// EventServerMove: the server's address moved from Old to New.
	EventServerMove
)

var eventNames = [...]string{"", "forward", "drop", "link", "blackout", "handover", "rebind", "mapping", "server_move"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) && k != 0 {
		return eventNames[k]
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event records what the emulator did, for tests and benchmarks to
// observe as data. For a given seed, the same events offered in the same
// order give the same events out.
type Event struct {
	Time   time.Time
	Kind   EventKind
	Dir    Dir           // EventForward, EventDrop, EventLink
	Size   int           // EventForward, EventDrop: the datagram's size
	Delay  time.Duration // EventForward: time in the link; EventBlackout, EventHandover: outage
	Reason DropReason    // EventDrop
	Link   LinkConfig    // EventLink
	// Old and New are the addresses of EventMapping and EventServerMove.
	Old, New netip.AddrPort
}

func (e Event) String() string {
	s := e.Time.Format("15:04:05.000000") + " " + e.Kind.String()
	switch e.Kind {
	case EventForward:
		s += " " + e.Dir.String() + " " + strconv.Itoa(e.Size) + "B +" + e.Delay.String()
	case EventDrop:
		s += " " + e.Dir.String() + " " + strconv.Itoa(e.Size) + "B " + e.Reason.String()
	case EventLink:
		s += " " + e.Dir.String()
	case EventBlackout, EventHandover:
		s += " " + e.Delay.String()
	case EventMapping, EventServerMove:
		s += " " + e.Old.String() + " -> " + e.New.String()
	}
	return s
}
