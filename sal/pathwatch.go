package sal

import (
	"time"

	"github.com/quic-go/quic-go"
)

// How a Host with several paths tells that one stopped answering, and
// fast: the time it takes bounds the stall of every flow on the path.
//
// A connection that hears the peer all the time (a flow streams in either
// direction: data one way, acknowledgements the other) has stopped
// answering once it hears nothing for a few of its usual gaps, and at
// least a quarter of an RTT and four mean deviations of it: jitter and a
// lost acknowledgement do not go that long on a working path, while a
// handover's outage lasts 80-300 ms. The flows move then, well within a
// round trip. A false alarm costs a replay of the bytes in flight on a
// path that works, not a stall.
//
// A connection that hears the peer now and then cannot tell silence from
// quiet that way, so it asks: it sends a heartbeat (an empty Ack on its
// control stream, which the peer acknowledges within its max_ack_delay)
// when a flow's connection has heard nothing for a look, and every
// standbyBeat on a standby, which also keeps the listening Host from
// closing the standby as unused. A heartbeat left unanswered for a PTO
// (and a look, the watcher's resolution) says the path stopped answering.

const (
	standbyBeat     = 500 * time.Millisecond
	minPathLook     = 2 * time.Millisecond
	maxPathLook     = 25 * time.Millisecond
	standbyLook     = 50 * time.Millisecond
	minSilentStream = 10 * time.Millisecond // against a descheduled process
	minPathFails    = 40 * time.Millisecond
)

// pathClock follows one connection's received-packet counter.
type pathClock struct {
	heard     uint64        // PacketsReceived at the last look
	lastHeard time.Time     // the look that saw it change
	gap       time.Duration // smoothed time between looks that heard something; 0 before two
	askedAt   time.Time     // the first heartbeat since lastHeard; zero if none
}

func newPathClock(st quic.ConnectionStats, now time.Time) pathClock {
	return pathClock{heard: st.PacketsReceived, lastHeard: now}
}

// look takes a look at the connection's counters. It reports whether a
// packet was heard since the last look, and whether the path has stopped
// answering.
func (pc *pathClock) look(st quic.ConnectionStats, now time.Time, interval time.Duration) (heard, silent bool) {
	if st.PacketsReceived != pc.heard {
		g := now.Sub(pc.lastHeard)
		if pc.gap == 0 {
			pc.gap = g
		} else {
			pc.gap = (7*pc.gap + g) / 8
		}
		pc.heard, pc.lastHeard, pc.askedAt = st.PacketsReceived, now, time.Time{}
		return true, false
	}
	quiet := now.Sub(pc.lastHeard)
	// Streaming: the peer is heard at least twice a round trip.
	if pc.gap > 0 && 2*pc.gap <= st.SmoothedRTT && quiet >= pc.streamLimit(st, interval) {
		return false, true
	}
	return false, !pc.askedAt.IsZero() && now.Sub(pc.askedAt) >= max(pto(st)+interval, minPathFails)
}

// streamLimit is how long a streaming connection may hear nothing.
func (pc *pathClock) streamLimit(st quic.ConnectionStats, interval time.Duration) time.Duration {
	return max(st.SmoothedRTT/4, 4*st.MeanDeviation, 4*pc.gap, 2*interval, minSilentStream)
}

// asked records a heartbeat sent at now.
func (pc *pathClock) asked(now time.Time) {
	if pc.askedAt.IsZero() {
		pc.askedAt = now
	}
}

// watchPathOf starts the path watcher of p, a connection this Host
// dialed, unless it runs already.
func (h *Host) watchPathOf(p *peer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p.watched || h.closed || p.conn == nil || p.conn.Context().Err() != nil {
		return
	}
	p.watched = true
	h.wg.Add(1)
	go h.watchPath(p)
}

// watchPath runs while p's connection lives, when the Host has further
// paths: it tells that the path stopped answering, moves the flows off
// it, and keeps a connection on every path while there are flows.
func (h *Host) watchPath(p *peer) {
	defer h.wg.Done()
	qc := p.conn
	ctx := qc.Context()
	now := time.Now()
	clock := newPathClock(qc.ConnectionStats(), now)
	lastBeat := now
	var failingSince time.Time
	timer := time.NewTimer(minPathLook)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		st := qc.ConnectionStats()
		now := time.Now()

		h.mu.Lock()
		carrying := p.flows > 0
		standby := !carrying && h.siblingsBusyLocked(p.addr)
		wasFailing := p.failing
		multipath := h.multipathLocked()
		h.mu.Unlock()

		interval := standbyLook
		if carrying {
			interval = min(max(st.SmoothedRTT/8, minPathLook), maxPathLook)
		}
		heard, silent := clock.look(st, now, interval)
		switch {
		case heard && wasFailing:
			h.mu.Lock()
			p.failing = false
			h.mu.Unlock()
			failingSince = time.Time{}
			h.emit(Event{Kind: EventPathUp, From: netipAddrPortOf(qc.LocalAddr()), To: p.addr})
		case silent && !wasFailing:
			h.mu.Lock()
			p.failing = true
			h.mu.Unlock()
			failingSince = now
			h.log.Debug("path stopped answering", "local", qc.LocalAddr(), "peer", p.addr, "quiet", now.Sub(clock.lastHeard))
			h.evacuate(p, errPathDown)
		case wasFailing && carrying:
			// Flows stranded when no other path worked: move them as soon
			// as one does.
			h.evacuate(p, errPathDown)
		}
		if wasFailing && p.path != nil && !carrying && now.Sub(failingSince) > h.silenceLimit(st) {
			// A further path's connection that stays silent is of no use
			// as a standby: close it, and let keepPaths dial afresh (a NAT
			// that forgot its mapping, a path that changed under it).
			qc.CloseWithError(codeMoved, "path silent")
			return
		}

		quiet := now.Sub(clock.lastHeard)
		if carrying && quiet >= interval && now.Sub(lastBeat) >= interval ||
			(standby || carrying) && now.Sub(lastBeat) >= standbyBeat {
			p.ctl.heartbeat()
			lastBeat = now
			clock.asked(now)
		}
		if multipath && (carrying || standby) {
			h.keepPaths(p.addr, p.sni, true)
		}
		timer.Reset(interval)
	}
}
