package sal

import (
	"time"

	"github.com/quic-go/quic-go"
)

// How a Host with several paths tells that one stopped answering, and
// fast: the time it takes bounds the stall of every flow on the path.
//
// A connection that sends flow data and hears the peer's acknowledgements
// all the time has stopped answering once it hears nothing for four of
// its usual gaps between packets, one and a half times the longest quiet
// it has lately seen while working (up to half an RTT), a quarter of an
// RTT or four mean deviations of it, whichever is longest: jitter and a lost
// acknowledgement do not go that long on a working path, while a
// handover's outage lasts 80-300 ms. The flows move then, well within a
// round trip. A false alarm costs a replay of the bytes in flight on a
// path that works, not a stall.
//
// A connection that only receives, or hears the peer now and then, cannot
// tell silence from quiet that way, so it asks: it sends a heartbeat (an empty Ack on its
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
	gap       time.Duration // smoothed time between packets heard; 0 before the first look that heard one
	// longest is the longest quiet a look ended on a working path lately:
	// jitter, which holds packets back in bursts, and lost
	// acknowledgements. It decays by half in about 700 looks.
	longest time.Duration
	askedAt time.Time // the first heartbeat since lastHeard; zero if none
}

func newPathClock(st quic.ConnectionStats, now time.Time) pathClock {
	return pathClock{heard: st.PacketsReceived, lastHeard: now}
}

// look takes a look at the connection's counters. wrote says flow data
// went to the connection since the last packet heard: the peer owes
// acknowledgements. It reports whether a packet was heard since the last
// look, and whether the path has stopped answering.
func (pc *pathClock) look(st quic.ConnectionStats, now time.Time, interval time.Duration, wrote bool) (heard, silent bool) {
	pc.longest -= pc.longest / 1024
	if st.PacketsReceived != pc.heard {
		quiet := now.Sub(pc.lastHeard)
		if wrote {
			pc.longest = max(pc.longest, quiet) // a quiet in which acknowledgements were due
		}
		// The time per packet since the last look that heard one.
		g := quiet / time.Duration(st.PacketsReceived-pc.heard)
		if pc.gap == 0 {
			pc.gap = g
		} else {
			pc.gap = (7*pc.gap + g) / 8
		}
		pc.heard, pc.lastHeard, pc.askedAt = st.PacketsReceived, now, time.Time{}
		return true, false
	}
	quiet := now.Sub(pc.lastHeard)
	// Streaming: the peer is heard at least twice a round trip, and owes
	// acknowledgements. (A peer that streams to us and stops may only have
	// nothing more to say: the heartbeat below tells.)
	if wrote && pc.gap > 0 && 2*pc.gap <= st.SmoothedRTT && quiet >= pc.streamLimit(st, interval) {
		return false, true
	}
	return false, !pc.askedAt.IsZero() && now.Sub(pc.askedAt) >= max(pto(st)+interval, minPathFails)
}

// streamLimit is how long a streaming connection may hear nothing.
func (pc *pathClock) streamLimit(st quic.ConnectionStats, interval time.Duration) time.Duration {
	return max(st.SmoothedRTT/4, 4*st.MeanDeviation, 4*pc.gap, min(3*pc.longest/2, st.SmoothedRTT/2), 2*interval, minSilentStream)
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
	if p.watched || h.closed || p.sess == nil || p.sess.qc.Context().Err() != nil {
		return
	}
	p.watched = true
	h.wg.Go(func() { h.watchPath(p) })
}

// watchPath runs while p's connection lives, when the Host has further
// paths: it tells that the path stopped answering, moves the flows off
// it, and keeps a connection on every path while there are flows.
func (h *Host) watchPath(p *peer) {
	h.restripe(p) // a new connection on a path: striped flows join it
	qc := p.sess.qc
	ctx := qc.Context()
	now := time.Now()
	clock := newPathClock(qc.ConnectionStats(), now)
	wroteMark := p.sess.wrote.Load() // flow writes as of the last packet heard
	refusedMark := ^uint64(0)        // sends the socket refused, as of the last look; none taken yet
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
		if p.path != nil {
			// ListenAddr's connections keep it in watchSilence; a further
			// path's has only this watcher to tell a flow's ResumeTimeout
			// when the peer was last heard (see lastHeard).
			p.sess.heard.observe(st.PacketsReceived, now)
		}

		h.mu.Lock()
		carrying := p.flows > 0
		standby := !carrying && h.siblingsBusyLocked(p.addr)
		wasFailing := p.failing
		multipath := h.multipathLocked()
		refused := sendsRefused(h.transportOfLocked(p.path).pc)
		h.mu.Unlock()

		interval := standbyLook
		if carrying {
			interval = min(max(st.SmoothedRTT/8, minPathLook), maxPathLook)
		}
		wrote := p.sess.wrote.Load()
		heard, silent := clock.look(st, now, interval, carrying && wrote != wroteMark)
		if heard {
			wroteMark = wrote
		}
		cause := errPathDown
		if refused != nil {
			// The kernel refused a send for want of a route or an
			// address: the path is gone, whatever the peer says later.
			n := refused.Load()
			if n != refusedMark && refusedMark != ^uint64(0) && !heard {
				silent, cause = true, errPathRefused
			}
			refusedMark = n
		}
		switch {
		case heard && wasFailing:
			h.mu.Lock()
			p.failing = false
			h.mu.Unlock()
			failingSince = time.Time{}
			h.emit(Event{Kind: EventPathUp, From: h.localOf(p), To: p.addr})
			h.restripe(p)
		case silent && !wasFailing:
			h.mu.Lock()
			p.failing = true
			h.mu.Unlock()
			failingSince = now
			h.log.Debug("path stopped answering", "local", h.localOf(p), "peer", p.addr, "quiet", now.Sub(clock.lastHeard), "cause", cause)
			h.evacuate(p, cause)
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
			p.sess.heartbeat()
			lastBeat = now
			clock.asked(now)
		}
		if multipath && (carrying || standby) {
			h.keepPaths(p.addr, p.sni, true)
		}
		timer.Reset(interval)
	}
}
