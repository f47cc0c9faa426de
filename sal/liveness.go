package sal

import (
	"context"
	"errors"
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
// packets unanswered for Config.SilenceTimeout it tries a fresh
// handshake. If that completes while the old connection is still silent,
// the new connection takes the old one's place and the flows resume on
// it. If another Host answers (another key, or a refusal of the service),
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

// silenceLimit is how long a connection may stay unanswered: the
// configured timeout, but at least three PTOs, so that a slow path is not
// mistaken for a broken one.
func (h *Host) silenceLimit(st quic.ConnectionStats) time.Duration {
	return max(h.cfg.silenceTimeout(), 3*pto(st))
}

// pto is RFC 9002's probe timeout for the connection's current path.
func pto(st quic.ConnectionStats) time.Duration {
	const maxAckDelay = 25 * time.Millisecond // RFC 9000's default, and quic-go's
	return st.SmoothedRTT + max(4*st.MeanDeviation, time.Millisecond) + maxAckDelay
}

// watchSilence runs while the connection of p, a peer this Host dialed,
// lives.
func (h *Host) watchSilence(p *peer) {
	defer h.wg.Done()
	qc := p.conn
	ctx := qc.Context()
	look := max(h.cfg.silenceTimeout()/4, 50*time.Millisecond) // > max_ack_delay
	s := silence{heard: qc.ConnectionStats().PacketsReceived, lastLook: time.Now()}
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
		unanswered := s.observe(st, time.Now(), look)
		next := look
		switch {
		case unanswered == 0:
			backoff = 0
		case unanswered >= h.silenceLimit(st):
			if h.replaceSilent(ctx, p, unanswered) {
				return
			}
			backoff = min(max(2*backoff, look), h.cfg.endpointTimeout())
			next = backoff
		}
		timer.Reset(next)
	}
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
	heard := p.conn.ConnectionStats().PacketsReceived
	dctx, cancel := context.WithTimeout(ctx, h.cfg.endpointTimeout())
	defer cancel()
	np := &peer{host: h, addr: p.addr, sni: p.sni, ready: make(chan struct{}), flows: 1}
	h.dialPeer(dctx, np)
	refused := errors.Is(np.err, ErrNoListener)
	if np.err != nil && !refused {
		h.log.Debug("silent connection: peer unreachable too", "peer", p.addr, "err", np.err)
		return false
	}
	cameBack := p.conn.ConnectionStats().PacketsReceived != heard
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
		np.conn.CloseWithError(codeIdle, "not needed")
	}
	switch {
	case replace:
		h.releasePeer(np) // the flows take it up as they resume; until then it idles
		h.log.Debug("silent connection replaced", "peer", p.addr, "unanswered", unanswered)
		h.emit(Event{Kind: EventReplaced, To: p.addr, Stall: unanswered})
		p.conn.CloseWithError(codeMoved, "peer silent; replaced")
		return true
	case still && left:
		h.log.Debug("silent connection: the peer left its address", "peer", p.addr, "refused", refused)
		p.conn.CloseWithError(codeMoved, "peer silent; another host answers")
		return true
	}
	return false
}
