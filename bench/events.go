package main

import (
	"cmp"
	"context"
	"slices"
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
	// path is the path of a multi-path scenario the event is on: 0 is
	// the first (and a single-path scenario's only one), allPaths every
	// one (a tunnel, a server move).
	path int
}

// allPaths is the path of an event that hits every path at once.
const allPaths = -1

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

// fromMulti turns a trace per path (trace.MultiProfile) into one list of
// events, up to length, each on its trace's path. The tunnels, which
// every trace holds, are kept once, on allPaths, as are server moves.
func fromMulti(trs []*trace.Trace, length time.Duration) []pathEvent {
	var out []pathEvent
	for i, tr := range trs {
		for _, e := range fromTrace(tr, length) {
			e.path = i
			if e.kind == evBlackout || e.kind == evServerMove {
				if i > 0 {
					continue
				}
				e.path = allPaths
			}
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b pathEvent) int { return cmp.Compare(a.at, b.at) })
	return out
}

// onPath keeps the events that the lane of a single-path system sees in
// a multi-path scenario: those of the first path and of every path.
func onPath(evs []pathEvent, path int) []pathEvent {
	var out []pathEvent
	for _, e := range evs {
		if e.path == path || e.path == allPaths {
			out = append(out, e)
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

// linkAt returns the link of the first path in force at t.
func linkAt(evs []pathEvent, t time.Duration) trace.Link { return linkOn(evs, 0, t) }

// linkOn returns the link of the given path in force at t.
func linkOn(evs []pathEvent, path int, t time.Duration) trace.Link {
	var l trace.Link
	for _, e := range evs {
		if e.at > t {
			break
		}
		if e.kind == evLink && e.path == path {
			l = e.link
		}
	}
	return l
}

// pathsOf returns how many paths evs are on: 1 for a single-path
// scenario.
func pathsOf(evs []pathEvent) int {
	n := 1
	for _, e := range evs {
		n = max(n, e.path+1)
	}
	return n
}

// downTime is how long the first path drops everything in [0, length).
func downTime(evs []pathEvent, length time.Duration) time.Duration {
	var d time.Duration
	var until time.Duration
	for _, e := range evs {
		if e.kind != evHandover && e.kind != evBlackout || e.path != 0 && e.path != allPaths {
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
	rtt    time.Duration // the link's RTT after it; with several paths, the surviving path's
	path   int           // the path it is on (a handover of several paths), or allPaths
}

// marksOf returns the disruptions of evs. Handovers and server moves
// count as stalls; tunnels count only if tunnelStalls is set (in hsr-300
// a 28 s tunnel is not a handover); a run of rebindings is one mark.
//
// With several paths, a handover is one path's, and its RTT is that of
// the path that survives it (the best other one); a handover within
// tunnelShadow of a tunnel, which cut every path, is marked but not
// measured, for its stall would be the tunnel's.
func marksOf(evs []pathEvent, tunnelStalls bool) []mark {
	var out []mark
	paths := pathsOf(evs)
	for i, e := range evs {
		rtt := linkAt(evs, e.at).RTT
		switch e.kind {
		case evHandover:
			m := mark{at: e.at, kind: "handover", outage: e.dur, stall: true, rtt: linkOn(evs, e.path, e.at+e.dur).RTT, path: e.path}
			if paths > 1 {
				m.rtt = survivingRTT(evs, e.path, paths, e.at)
				if nearTunnel(evs, e.at, e.dur) {
					m.kind, m.stall = "handover by a tunnel", false
				}
			}
			out = append(out, m)
		case evBlackout:
			out = append(out, mark{at: e.at, kind: "tunnel", outage: e.dur, stall: tunnelStalls, rtt: rtt, path: e.path})
		case evServerMove:
			out = append(out, mark{at: e.at, kind: "server move", stall: true, rtt: rtt, path: e.path})
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

// survivingRTT is the lowest RTT at t of the paths other than the one
// handing over.
func survivingRTT(evs []pathEvent, handing, paths int, t time.Duration) time.Duration {
	var best time.Duration
	for p := range paths {
		if rtt := linkOn(evs, p, t).RTT; p != handing && rtt > 0 && (best == 0 || rtt < best) {
			best = rtt
		}
	}
	return best
}

// tunnelShadow is how close to a tunnel that cut every path a handover
// is not measured: just after it the flows are still recovering from the
// tunnel, and just before it they may not have recovered from the
// handover when the tunnel begins; either way the stall would be the
// tunnel's.
const tunnelShadow = 2 * time.Second

// nearTunnel reports whether a handover at t with the given outage is in
// a tunnel of every path or within tunnelShadow of one, before or after.
func nearTunnel(evs []pathEvent, t, outage time.Duration) bool {
	for _, e := range evs {
		if e.kind == evBlackout && e.path == allPaths && t+outage+tunnelShadow > e.at && t < e.at+e.dur+tunnelShadow {
			return true
		}
	}
	return false
}

// multiLane is a lane over several paths: the events of each path go to
// that path.
type multiLane interface {
	lane
	setLinkOn(path int, l trace.Link)
	handoverOn(ctx context.Context, path int, outage time.Duration)
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
		ml, multi := l.(multiLane)
		switch {
		case multi && e.kind == evLink:
			ml.setLinkOn(e.path, e.link)
			continue
		case multi && e.kind == evHandover && e.path != allPaths:
			ml.handoverOn(ctx, e.path, e.dur)
			continue
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
