package sal

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// A QUIC connection can break while the network works. quic-go's server
// validates at most three new client addresses per 5 s; after a burst of
// NAT rebindings it keeps answering a mapping that no longer exists, and
// the client, whose packets still arrive, hears nothing until the 30 s
// idle timeout. The same happens when a peer's path changes in a way it
// cannot see. Only the dialing end can repair this, by dialing again: so
// it watches each connection it dialed, and once the peer has left its
// packets unanswered for three PTOs (at least Config.SilenceTimeout,
// 100 ms by default) it tries a fresh handshake. If that completes while
// the old connection is still silent, the new connection takes the old
// one's place and the flows resume on it. If another Host answers (another key, or a refusal of the service),
// the peer has left the address, and the old connection closes so that its
// flows resume wherever the service now is. If the handshake fails, the
// network is down (a tunnel), and the old connection is left to recover by
// itself; the check repeats meanwhile, so whichever gets through first
// carries the flows on.

// silence follows a connection's packet counters to tell how long the peer
// has left the Host's packets unanswered.
type silence struct {
	heard    uint64    // PacketsReceived at the last look
	sent     uint64    // PacketsSent one look after the last packet heard
	based    bool      // sent is set
	askedAt  time.Time // the look that first saw packets go out unanswered
	lastLook time.Time
}

// observe takes a look at the counters and returns how long the packets
// sent since the last packet heard have gone unanswered (0 if none).
// A look that comes late (a descheduled process) does not stretch the
// silence: it counts at most one look interval back.
func (s *silence) observe(st quic.ConnectionStats, now time.Time, look time.Duration) time.Duration {
	switch {
	case st.PacketsReceived != s.heard:
		s.heard, s.based, s.askedAt = st.PacketsReceived, false, time.Time{}
	case !s.based:
		// Acknowledgements of what was heard last go out up to
		// max_ack_delay later, before this look; from here on, whatever
		// is sent calls for an answer (data, probes, keep-alives).
		s.sent, s.based = st.PacketsSent, true
	case st.PacketsSent > s.sent && s.askedAt.IsZero():
		s.askedAt = s.lastLook // sent at some time after the last look
		if earliest := now.Add(-look); s.askedAt.Before(earliest) {
			s.askedAt = earliest
		}
	}
	s.lastLook = now
	if s.askedAt.IsZero() {
		return 0
	}
	return now.Sub(s.askedAt)
}

// heardClock keeps when the peer was last heard on a connection: where a
// flow's Config.ResumeTimeout starts (see Conn.suspend). The silence
// watcher of a dialed connection keeps it; on other connections it is not
// watched, and lastHeard falls back on what the cause of death tells.
type heardClock struct {
	mu      sync.Mutex
	watched bool
	packets uint64    // PacketsReceived at the last look
	at      time.Time // the look that first saw packets count
}

// observe records a look at the connection's received-packet counter.
func (hc *heardClock) observe(packets uint64, now time.Time) {
	hc.mu.Lock()
	if !hc.watched || packets != hc.packets {
		hc.watched, hc.packets, hc.at = true, packets, now
	}
	hc.mu.Unlock()
}

// since returns the time the peer was last heard, given the counter now: a
// packet counted after the last look was heard now, as far as anyone can
// tell. ok is false when nobody watches the connection.
func (hc *heardClock) since(packets uint64, now time.Time) (at time.Time, ok bool) {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	switch {
	case !hc.watched:
		return time.Time{}, false
	case packets != hc.packets:
		return now, true
	}
	return hc.at, true
}

// lastHeard tells when the peer was last heard on sess's connection, which
// died (or whose stream failed) of cause at now. It errs late, never early:
// a flow's ResumeTimeout may run a little long, but never cuts a flow
// short that its peer still keeps.
func (sess *session) lastHeard(cause error, now time.Time) time.Time {
	if peerSpoke(cause) {
		return now // the peer's own close or reset is a packet heard
	}
	if at, ok := sess.heard.since(sess.qc.ConnectionStats().PacketsReceived, now); ok {
		return at
	}
	var idle *quic.IdleTimeoutError
	if errors.As(cause, &idle) {
		// quic-go declares a connection dead once it has heard nothing
		// for the idle timeout (counted from its first ack-eliciting
		// packet after the last one heard). The peer may have asked for a
		// shorter one: a roam peer does when its own ResumeTimeout is
		// shorter, and then gives up on the flow earlier than this end
		// anyway, so counting back our own timeout never ends a flow the
		// peer still resumes.
		return now.Add(-sess.h.quicConf.MaxIdleTimeout)
	}
	return now
}

// peerSpoke reports whether err came from the peer: a close, a reset or a
// stateless reset it sent.
func peerSpoke(err error) bool {
	var (
		ae *quic.ApplicationError
		te *quic.TransportError
		se *quic.StreamError
		sr *quic.StatelessResetError
	)
	switch {
	case errors.As(err, &ae):
		return ae.Remote
	case errors.As(err, &te):
		return te.Remote
	case errors.As(err, &se):
		return se.Remote
	}
	return errors.As(err, &sr)
}

// silenceLimit is how long a connection may stay unanswered: three PTOs,
// so that a slow path is not mistaken for a broken one, but at least the
// configured timeout (by default silenceFloor, against a descheduled
// process). Three PTOs is what RFC 9000 (section 8.2.4) allows a path
// probe, and a few PTOs are what a NAT rebinding should cost, not a fixed
// second: on a 20 ms path that is 150 ms.
func (h *Host) silenceLimit(st quic.ConnectionStats) time.Duration {
	return max(h.cfg.silenceTimeout(), 3*pto(st))
}

// silenceLook is how often the silence watcher looks at a connection's
// counters: a quarter of the limit, so that it notices the silence within
// a quarter more, but never more often than every 50 ms, which is past
// max_ack_delay (see silence.observe).
func (h *Host) silenceLook(st quic.ConnectionStats) time.Duration {
	return max(h.silenceLimit(st)/4, 50*time.Millisecond)
}

// pto is RFC 9002's probe timeout for the connection's current path.
func pto(st quic.ConnectionStats) time.Duration {
	const maxAckDelay = 25 * time.Millisecond // RFC 9000's default, and quic-go's
	return st.SmoothedRTT + max(4*st.MeanDeviation, time.Millisecond) + maxAckDelay
}

// watchSilence runs while the connection of p, a peer this Host dialed,
// lives.
func (h *Host) watchSilence(p *peer) {
	qc := p.sess.qc
	ctx := qc.Context()
	look := h.silenceLook(qc.ConnectionStats())
	s := silence{heard: qc.ConnectionStats().PacketsReceived, lastLook: time.Now()}
	p.sess.heard.observe(s.heard, s.lastLook)
	var backoff time.Duration // after a check that found the old connection still needed
	timer := time.NewTimer(look)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		st := qc.ConnectionStats()
		now := time.Now()
		p.sess.heard.observe(st.PacketsReceived, now)
		unanswered := s.observe(st, now, look)
		look = h.silenceLook(st)
		next := look
		switch {
		case unanswered == 0:
			backoff = 0
		case unanswered >= h.silenceLimit(st):
			if h.replaceSilent(ctx, p, unanswered) {
				return
			}
			if h.silentPastResume(p, time.Now()) {
				// Every flow it carried is lost by now (Conn.suspend), so
				// the connection is of no more use. This matters when
				// Config.QUIC sets an idle timeout past ResumeTimeout.
				h.log.Debug("silent connection: nothing heard for ResumeTimeout", "peer", p.addr)
				qc.CloseWithError(codeMoved, "peer silent for ResumeTimeout")
				return
			}
			backoff = min(max(2*backoff, look), h.cfg.endpointTimeout())
			next = backoff
		}
		timer.Reset(next)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// silentPastResume reports whether p's peer has gone unheard for
// Config.ResumeTimeout.
func (h *Host) silentPastResume(p *peer, now time.Time) bool {
	at, _ := p.sess.heard.since(p.sess.qc.ConnectionStats().PacketsReceived, now)
	return now.Sub(at) >= h.cfg.resumeTimeout()
}

// replaceSilent dials p's address afresh and, if the handshake completes
// while p's connection still hears nothing, puts the new connection in
// p's place and closes p's, so that its flows resume on the new one. If
// something else answers there (a Host with another key, or one that
// refuses the service), p's peer has left the address: p's connection
// closes, and its flows resume wherever the resolver or table now says the
// service is, rather than waiting out the idle timeout. It reports whether
// p's connection was closed.
func (h *Host) replaceSilent(ctx context.Context, p *peer, unanswered time.Duration) bool {
	heard := p.sess.qc.ConnectionStats().PacketsReceived
	// The check must not outlast the flows' ResumeTimeout: when it fails,
	// the watcher ends the connection at once if that has passed.
	deadline := time.Now().Add(h.cfg.endpointTimeout())
	if at, ok := p.sess.heard.since(heard, time.Now()); ok {
		deadline = minTime(deadline, at.Add(h.cfg.resumeTimeout()))
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	np := &peer{host: h, addr: p.addr, sni: p.sni, ready: make(chan struct{}), flows: 1}
	h.dialPeer(dctx, np)
	refused := errors.Is(np.err, ErrNoListener)
	if np.err != nil && !refused {
		h.log.Debug("silent connection: peer unreachable too", "peer", p.addr, "err", np.err)
		return false
	}
	cameBack := p.sess.qc.ConnectionStats().PacketsReceived != heard
	h.mu.Lock()
	still := !cameBack && !h.closed && !p.gone && h.peers[p.addr] == p &&
		np.transports[0] == h.cur // else a Rebind ran meanwhile and migrated p
	left := refused || np.key != p.key // someone else answers there now
	replace := still && !left && !np.gone
	if replace {
		h.removePeerLocked(p)
		h.peers[p.addr] = np
	}
	h.mu.Unlock()
	if !replace && np.err == nil {
		np.sess.qc.CloseWithError(codeIdle, "not needed")
	}
	switch {
	case replace:
		h.releasePeer(np) // the flows take it up as they resume; until then it idles
		h.log.Debug("silent connection replaced", "peer", p.addr, "unanswered", unanswered)
		h.emit(Event{Kind: EventReplaced, To: p.addr, Stall: unanswered})
		p.sess.qc.CloseWithError(codeMoved, "peer silent; replaced")
		return true
	case still && left:
		h.log.Debug("silent connection: the peer left its address", "peer", p.addr, "refused", refused)
		p.sess.qc.CloseWithError(codeMoved, "peer silent; another host answers")
		return true
	}
	return false
}
