package trace

import (
	"context"
	"time"
)

// Target is what a trace drives. Both forms of the emulator in
// mobility/emu implement it, and so can any test double.
type Target interface {
	// SetLink gives the path new properties: the state after merging the
	// link event into the ones before it.
	SetLink(Link)
	// Handover drops every datagram for outage; after that the server
	// sees the client at a new source address.
	Handover(outage time.Duration)
	// Blackout drops every datagram in both directions for d.
	Blackout(d time.Duration)
	// MoveServer gives the server a new address; the old one drops
	// everything from then on.
	MoveServer() error
}

// Play applies the trace's events to t at their times, counted from the
// call, and returns when the trace ends, when ctx is done (with
// context.Cause), or when MoveServer fails. It sleeps on the time
// package's timers, so inside a testing/synctest bubble it plays in
// virtual time: a 10 min trace takes milliseconds.
func Play(ctx context.Context, tr *Trace, t Target) error {
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var link Link
	for _, e := range tr.Events {
		// Deadlines count from start, not from the previous event, so
		// that slow targets do not make the schedule drift.
		if wait := time.Until(start.Add(e.At)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		switch e.Kind {
		case KindLink:
			link = link.Apply(e)
			t.SetLink(link)
		case KindHandover:
			t.Handover(e.Duration)
		case KindBlackout:
			t.Blackout(e.Duration)
		case KindServerMove:
			if err := t.MoveServer(); err != nil {
				return err
			}
		case KindEnd:
			return nil
		}
	}
	return nil
}
