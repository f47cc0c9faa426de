package trace

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Kind is the kind of an event.
type Kind uint8

// The kinds of event a trace holds.
const (
	// KindLink changes the link's properties; fields not given keep their value.
	KindLink Kind = iota + 1
	// KindHandover drops every datagram for Duration (the outage); after
	// that the server sees the client at a new source address.
	KindHandover
	// KindBlackout drops every datagram in both directions for Duration;
	// the addresses do not change (a tunnel).
	KindBlackout
	// KindServerMove changes the server's address; datagrams sent to the
	// old address are lost from then on.
	KindServerMove
	// KindEnd ends the scenario.
	KindEnd
)

var kindNames = [...]string{
	KindLink:       "link",
	KindHandover:   "handover",
	KindBlackout:   "blackout",
	KindServerMove: "server_move",
	KindEnd:        "end",
}

// String returns the kind's name as written in trace files.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Link is the state of a path: what link events set. The round-trip time
// is split evenly between the two directions; Jitter spreads it, so each
// one-way delay varies uniformly within ±Jitter/2 of RTT/2; the loss
// figures apply to each direction on its own.
type Link struct {
	RTT    time.Duration // rtt_ms
	Jitter time.Duration // jitter_ms
	Loss   float64       // loss: independent random loss, 0 to 1

	// Rate is the bottleneck's rate in bit/s (rate_mbps); zero means unlimited.
	Rate int64
	// QueueBytes bounds the drop-tail queue in front of the bottleneck
	// (queue_bytes); zero means the emulator's default.
	QueueBytes int

	// BurstEnter, BurstExit and BurstLoss are a Gilbert–Elliott model of
	// bursty loss (burst_enter, burst_exit, burst_loss): per datagram, the
	// chance to enter the bad state, the chance to leave it, and the loss
	// in it. Zero BurstEnter disables the model; zero BurstExit or BurstLoss
	// mean 1.
	BurstEnter, BurstExit, BurstLoss float64

	// Reorder is the chance that a datagram skips the delay and overtakes
	// the ones in flight (netem's reorder); zero keeps datagrams in order.
	Reorder float64
}

// Field is a set of Link fields, one bit each; link events record which
// fields their line gave.
type Field uint16

// The Link fields, named by their keys in trace files.
const (
	FieldRTT Field = 1 << iota
	FieldJitter
	FieldLoss
	FieldRate
	FieldQueue
	FieldBurstEnter
	FieldBurstExit
	FieldBurstLoss
	FieldReorder
)

// Event is one timed event of a trace.
type Event struct {
	// At is the time of the event from the start of the scenario.
	At   time.Duration
	Kind Kind
	// Link and Set belong to KindLink: Set says which fields of Link the
	// event gives; the other fields of Link are zero and mean nothing.
	Link Link
	Set  Field
	// Duration is the outage of a handover or the length of a blackout.
	Duration time.Duration
	// Line is the event's line in the file it was parsed from, or zero.
	Line int
}

// Apply returns l with the fields that the link event e gives replaced. It
// returns l unchanged for other events.
func (l Link) Apply(e Event) Link {
	if e.Kind != KindLink {
		return l
	}
	for _, k := range linkKeys {
		if e.Set&k.field != 0 {
			k.copy(&l, &e.Link)
		}
	}
	return l
}

// Trace is a parsed scenario: events in time order.
type Trace struct {
	Events []Event
}

// Duration is the time of the end event, or of the last event if the
// trace has no end.
func (t *Trace) Duration() time.Duration {
	if len(t.Events) == 0 {
		return 0
	}
	return t.Events[len(t.Events)-1].At
}

// String returns the trace in the file format; see WriteTo.
func (t *Trace) String() string {
	var b strings.Builder
	_, _ = t.WriteTo(&b)
	return b.String()
}

// WriteTo writes the trace in the file format that Parse reads, one event a
// line, so that Parse(t.String()) gives back the same events.
func (t *Trace) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	var n int64
	for _, e := range t.Events {
		m, _ := bw.WriteString(formatEvent(e))
		n += int64(m)
		_ = bw.WriteByte('\n')
		n++
	}
	return n, bw.Flush()
}

func formatEvent(e Event) string {
	var b strings.Builder
	b.WriteString(formatFixed(int64(e.At), 9, 3))
	b.WriteByte(' ')
	b.WriteString(e.Kind.String())
	switch e.Kind {
	case KindLink:
		for _, k := range linkKeys {
			if e.Set&k.field != 0 {
				b.WriteByte(' ')
				b.WriteString(k.name)
				b.WriteByte('=')
				b.WriteString(k.format(&e.Link))
			}
		}
	case KindHandover:
		fmt.Fprintf(&b, " outage_ms=%s", formatFixed(int64(e.Duration), 6, 0))
	case KindBlackout:
		fmt.Fprintf(&b, " duration_ms=%s", formatFixed(int64(e.Duration), 6, 0))
	}
	return b.String()
}

// formatFixed writes v / 10^scale in decimal, with at least minFrac and
// at most scale fractional digits, so that parseFixed reads it back exactly.
func formatFixed(v int64, scale, minFrac int) string {
	s := strconv.FormatInt(v, 10)
	for len(s) <= scale {
		s = "0" + s
	}
	whole, frac := s[:len(s)-scale], s[len(s)-scale:]
	for len(frac) > minFrac && frac[len(frac)-1] == '0' {
		frac = frac[:len(frac)-1]
	}
	if frac == "" {
		return whole
	}
	return whole + "." + frac
}
