package main

import (
	"context"
	"time"

	"github.com/roamnet/roam/mobility/trace"
)

// pathEvent is one change a scenario makes to the path of every lane at
// the same time after t0: the events of a trace, plus the NAT rebinding
// that the trace format has no word for.
type pathEvent struct {
	at   time.Duration
	kind eventKind
	link trace.Link    // evLink: the whole link from now on
	dur  time.Duration // evHandover: the outage; evBlackout: its length
}

type eventKind uint8

const (
	evLink eventKind = iota + 1
	evHandover
	evBlackout
	evServerMove
	evRebind
)

// fromTrace turns a trace into events, up to length (the whole trace if
// zero), with link events carrying the whole link state, as trace.Play
// hands it to a Target.
func fromTrace(tr *trace.Trace, length time.Duration) []pathEvent {
	var out []pathEvent
	var link trace.Link
	for _, e := range tr.Events {
		if length > 0 && e.At >= length {
			break
		}
		switch e.Kind {
		case trace.KindLink:
			link = link.Apply(e)
			out = append(out, pathEvent{at: e.At, kind: evLink, link: link})
		case trace.KindHandover:
			out = append(out, pathEvent{at: e.At, kind: evHandover, dur: e.Duration})
		case trace.KindBlackout:
			out = append(out, pathEvent{at: e.At, kind: evBlackout, dur: e.Duration})
		case trace.KindServerMove:
			out = append(out, pathEvent{at: e.At, kind: evServerMove})
		}
	}
	return out
}

// linkOnly keeps the link events: the same path, standing still.
func linkOnly(evs []pathEvent) []pathEvent {
	var out []pathEvent
	for _, e := range evs {
		if e.kind == evLink {
			out = append(out, e)
		}
	}
	return out
}

// linkAt returns the link in force at t.
func linkAt(evs []pathEvent, t time.Duration) trace.Link {
	var l trace.Link
	for _, e := range evs {
		if e.at > t {
			break
		}
		if e.kind == evLink {
			l = e.link
		}
	}
	return l
}

// downTime is how long the path drops everything in [0, length).
func downTime(evs []pathEvent, length time.Duration) time.Duration {
	var d time.Duration
	var until time.Duration
	for _, e := range evs {
		if e.kind != evHandover && e.kind != evBlackout {
			continue
		}
		from, to := max(e.at, until), min(e.at+e.dur, length)
		if to > from {
			d += to - from
		}
		until = max(until, e.at+e.dur)
	}
	return d
}

// mark is a disruption, drawn on the plots and, if stall is set, measured
// as a stall: the longest time a flow received nothing around it.
type mark struct {
	at     time.Duration
	kind   string
	outage time.Duration // the path's own outage, which no system can avoid
	span   time.Duration // a burst of events: from the first to the last
	stall  bool
	rtt    time.Duration // the link's RTT after it
}

// marksOf returns the disruptions of evs. Handovers and server moves
// count as stalls; tunnels count only if tunnelStalls is set (in hsr-300
// a 28 s tunnel is not a handover); a run of rebindings is one mark.
func marksOf(evs []pathEvent, tunnelStalls bool) []mark {
	var out []mark
	for i, e := range evs {
		rtt := linkAt(evs, e.at).RTT
		switch e.kind {
		case evHandover:
			out = append(out, mark{at: e.at, kind: "handover", outage: e.dur, stall: true, rtt: linkAt(evs, e.at+e.dur).RTT})
		case evBlackout:
			out = append(out, mark{at: e.at, kind: "tunnel", outage: e.dur, stall: tunnelStalls, rtt: rtt})
		case evServerMove:
			out = append(out, mark{at: e.at, kind: "server move", stall: true, rtt: rtt})
		case evRebind:
			if i > 0 && evs[i-1].kind == evRebind {
				out[len(out)-1].span = e.at - out[len(out)-1].at
				continue
			}
			out = append(out, mark{at: e.at, kind: "NAT rebindings", stall: true, rtt: rtt})
		}
	}
	return out
}

// play applies evs to l at their times after t0 and returns when they are
// done or ctx ends.
func play(ctx context.Context, t0 time.Time, evs []pathEvent, l lane) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for _, e := range evs {
		if wait := time.Until(t0.Add(e.at)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		switch e.kind {
		case evLink:
			l.setLink(e.link)
		case evHandover:
			l.handover(ctx, e.dur)
		case evBlackout:
			l.blackout(e.dur)
		case evServerMove:
			l.moveServer(ctx)
		case evRebind:
			l.rebind()
		}
	}
}
