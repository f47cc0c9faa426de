package sal

// How a striped carrier (stripe.go) is set up: asked for in the Open or
// Resume, agreed in the Reply, and joined by a stream on each further path.

import (
	"crypto/hmac"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/sal/internal/wire"
)

// newCarrier makes the carrier of a flow over s, whose SAL headers were
// just exchanged (or, for a dialer that does not wait, sent): a plain
// stream, or a striped carrier whose anchor s is when stripes was asked
// for. sent is the flow offset of its first byte out, id its name in a
// Stripe. A striped carrier's anchor reads chunks at once if reading,
// else once the Reply is in (replyIn). False if the Host is closed.
func (h *Host) newCarrier(s *quic.Stream, sess *session, sent, id uint64, stripes bool, peerWin uint64, reading bool) (*carrier, bool) {
	car := &carrier{s: s, head: s, sess: sess, sent: sent, base: sent, id: id}
	if stripes {
		st, ok := h.newStriped(s, sess, peerWin, reading)
		if !ok {
			return nil, false
		}
		st.car = car
		car.s, car.striped = st, st
	}
	return car, true
}

// errNoStripes: a listener answered a request for stripes without them.
var errNoStripes = fmt.Errorf("%w: the listener did not agree to stripes", ErrProtocol)

// agreedStripes reads the listener's window from its Reply to a request
// for stripes.
func agreedStripes(reply wire.Reply) (uint64, error) {
	w, ok, err := peerStripes(reply.Ext)
	if err == nil && !ok {
		err = errNoStripes
	}
	return w, err
}

// addStripes joins to car, a dialer's carrier of c, a stream on each other
// path that works, if car is striped.
func (c *Conn) addStripes(car *carrier) {
	if car.striped == nil || car.peer == nil {
		return
	}
	h := c.h
	h.mu.Lock()
	var ps []*peer
	for _, p := range h.candidatesLocked(car.peer.addr) {
		if p != car.peer && !p.failing && p.key == c.peerKey && p.sess != nil {
			p.holdLocked()
			ps = append(ps, p)
		}
	}
	h.mu.Unlock()
	for _, p := range ps {
		if car.striped.uses(p.sess) || !c.openStripe(car, p) {
			h.releasePeer(p)
		}
	}
}

// openStripe opens a stream on p's connection and joins it to car. The
// stream holds the reference on p the caller took, if it joins.
func (c *Conn) openStripe(car *carrier, p *peer) bool {
	s, err := p.sess.qc.OpenStream() // no waiting: at the peer's stream limit, the path goes without
	if err != nil {
		return false
	}
	// Join before the header goes out: a stream the listener may join must
	// be one this end reads and writes too. (Joined after the header, a
	// stream that lost a race to another on the same connection, or to
	// the carrier's end, was reset while the listener held it, and the
	// listener's reads failed with that reset.)
	sub := &substream{s: s, sess: p.sess, peer: p}
	p.sess.attach(c)
	if !car.striped.join(sub, true) {
		s.CancelRead(streamClosed) // nothing was written: the listener never joins it
		s.CancelWrite(streamClosed)
		p.sess.detachCarrier(c, car)
		return false
	}
	hdr := wire.AppendStripe(nil, wire.Stripe{FlowID: c.flowID, Carrier: car.id, Tag: stripeTag(c.secret, c.flowID, car.id)})
	if _, err := s.Write(hdr); err != nil {
		car.striped.leave(sub) // gives the reference on p back, once
	}
	return true
}

// restripe joins a stream on p's connection, a path that now works, to
// every striped carrier of a flow to p's peer.
func (h *Host) restripe(p *peer) {
	h.mu.Lock()
	if h.cfg.PathPolicy != PathAggregate || h.closed {
		h.mu.Unlock()
		return
	}
	flows := make([]*Conn, 0, len(h.flows))
	for _, c := range h.flows {
		if c.dialer {
			flows = append(flows, c)
		}
	}
	h.mu.Unlock()
	for _, c := range flows {
		c.mu.Lock()
		car := c.car
		ok := car != nil && car.striped != nil && car.peer != nil && car.peer.addr == p.addr &&
			c.state == flowActive && car.isReady()
		c.mu.Unlock()
		if ok {
			c.addStripes(car)
		}
	}
}

// serveStripe joins a stream the dialer opened with a Stripe to the
// flow's striped carrier, if the Stripe proves the flow's secret and
// names its current carrier.
func (h *Host) serveStripe(sess *session, s *quic.Stream, sp *wire.Stripe) {
	peerKey := sess.peerKey
	refuse := func(why string) {
		h.log.Debug("stripe refused", "flow", sp.FlowID, "why", why)
		h.answerAndEnd(s, wire.StatusNoFlow, streamRejected)
	}
	c := h.flow(flowKey{listener: true, peer: peerKey, id: sp.FlowID})
	if c == nil {
		refuse("unknown flow")
		return
	}
	want := stripeTag(c.secret, c.flowID, sp.Carrier)
	c.mu.Lock()
	car := c.car
	ok := c.secret != [secretLen]byte{} && hmac.Equal(want[:], sp.Tag[:]) &&
		c.state == flowActive && car != nil && car.striped != nil && car.id == sp.Carrier
	c.mu.Unlock()
	if !ok {
		refuse("no such carrier")
		return
	}
	b, _ := wire.AppendReply(nil, wire.Reply{Status: wire.StatusOK})
	s.SetWriteDeadline(time.Now().Add(h.cfg.openTimeout()))
	if _, err := s.Write(b); err != nil {
		s.CancelRead(streamProtocol)
		s.CancelWrite(streamProtocol)
		return
	}
	s.SetWriteDeadline(time.Time{})
	sess.attach(c)
	if !car.striped.join(&substream{s: s, sess: sess}, false) {
		// The carrier is over, or has a stream there: the dialer sees
		// this one reset and resumes, or already has.
		s.CancelRead(streamMoved)
		s.CancelWrite(streamMoved)
		sess.detachCarrier(c, car)
	}
}
