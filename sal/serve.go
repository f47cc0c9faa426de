package sal

// The server side of a Host: the connections peers dial (acceptConns,
// serveConn), each a session (session.go) admitted under the connection
// limits (limits.go), and the streams they open, whose first message opens
// a flow for a Listener, resumes one (serveResume, resume.go), joins a
// striped one (serveStripe, stripejoin.go) or asks whether a service is
// served (ping.go). The Listener API is in listener.go.

import (
	"crypto/tls"
	"errors"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/sal/internal/wire"
)

// acceptConns takes the connections peers dial to the Host's socket.
func (h *Host) acceptConns(qln *quic.Listener) {
	for {
		qc, err := qln.Accept(h.ctx)
		if err != nil {
			return
		}
		handshaken(qc)
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			qc.CloseWithError(codeHostClosed, "host closed")
			continue
		}
		h.inbound[qc] = struct{}{}
		h.wg.Go(func() { h.serveConn(qc) }) // under h.mu, as Close sets closed before it waits
		h.mu.Unlock()
	}
}

// serveConn accepts the streams a peer opens on one connection.
func (h *Host) serveConn(qc *quic.Conn) {
	defer func() {
		h.mu.Lock()
		delete(h.inbound, qc)
		h.mu.Unlock()
	}()
	key, err := peerFingerprint(qc.ConnectionState().TLS)
	if err != nil {
		qc.CloseWithError(codeNoError, "bad peer certificate")
		return
	}
	sess := h.newSession(qc, false, key)
	// (The peer's address may change; it counts where it connected from.)
	evict, refused := h.admitConn(sess, netipAddrPortOf(qc.RemoteAddr()).Addr())
	for _, old := range evict {
		h.log.Debug("connection evicted", "peer", old.qc.RemoteAddr(), "key", old.peerKey)
		old.qc.CloseWithError(codeMoved, "replaced by a newer connection")
	}
	if refused != nil {
		h.log.Debug("connection refused", "peer", qc.RemoteAddr(), "key", key, "err", refused)
		qc.CloseWithError(codeLimit, limitReason(refused))
		return
	}
	defer h.leaveConn(sess)
	sess.startIdle(h.cfg.inboundIdleTimeout())
	remoteID, _ := NewServiceID("", key)
	remote := Addr{Service: remoteID, Endpoint: netipAddrPortOf(qc.RemoteAddr())}
	for {
		s, err := qc.AcceptStream(h.ctx)
		if err != nil {
			return
		}
		if !sess.admitStream(h.cfg.maxFlowsPerConn()) {
			h.limits.flowsRefused.Add(1)
			h.wg.Go(func() { h.refuseStream(s, &LimitError{Limit: LimitFlowsPerConn, Max: h.cfg.maxFlowsPerConn()}) })
			continue
		}
		h.wg.Go(func() { h.serveStream(sess, s, remote) })
	}
}

// refuseStream answers a stream over a limit with the LimitError, after
// reading its header (or a short wait for it), so that the dialer reads the
// refusal rather than a reset.
func (h *Host) refuseStream(s *quic.Stream, le *LimitError) {
	s.SetDeadline(time.Now().Add(min(h.cfg.openTimeout(), time.Second)))
	if _, err := wire.ReadRequest(s); err == nil {
		if b, err := wire.AppendReply(nil, limitReply(le)); err == nil {
			s.Write(b)
		}
	}
	s.CancelRead(streamRejected)
	s.Close()
}

// answerAndEnd answers a stream's header with st and ends the stream: the
// Reply, then FIN, so the dialer reads the status first; what the dialer
// sends after its header is refused with code.
func (h *Host) answerAndEnd(s *quic.Stream, st wire.Status, code quic.StreamErrorCode) {
	if b, err := wire.AppendReply(nil, wire.Reply{Status: st}); err == nil {
		s.SetWriteDeadline(time.Now().Add(h.cfg.openTimeout()))
		s.Write(b)
	}
	s.CancelRead(code)
	s.Close()
}

// serveStream reads a new stream's first message: an Open, which it hands
// to the service's Listener, a Resume of an existing flow, a
// further stream of a striped one, or a Ping. It answers
// the dialer either way.
func (h *Host) serveStream(sess *session, s *quic.Stream, remote Addr) {
	key := sess.peerKey
	defer sess.streamDone() // a flow it opened or resumed is attached by now
	reject := func(st wire.Status, code quic.StreamErrorCode) { h.answerAndEnd(s, st, code) }
	s.SetReadDeadline(time.Now().Add(h.cfg.openTimeout()))
	req, err := wire.ReadRequest(s)
	if err != nil {
		h.log.Debug("bad SAL header", "peer", remote.Endpoint, "err", err)
		if errors.Is(err, wire.ErrMalformed) {
			reject(wire.StatusBadRequest, streamProtocol)
		} else {
			s.CancelRead(streamProtocol)
			s.CancelWrite(streamProtocol)
		}
		return
	}
	s.SetReadDeadline(time.Time{})
	if req.Resume != nil {
		h.serveResume(sess, s, req.Resume)
		return
	}
	if req.Stripe != nil {
		h.serveStripe(sess, s, req.Stripe)
		return
	}
	if req.Ping != nil {
		st := h.pingStatus(req.Ping)
		if st == wire.StatusBadRequest {
			h.log.Debug("bad service ID in ping", "peer", remote.Endpoint)
			reject(st, streamProtocol)
		} else {
			reject(st, streamClosed) // the answer, then the stream's end
		}
		return
	}
	open := req.Open
	peerWin, stripes, err := peerStripes(open.Ext)
	if err != nil {
		h.log.Debug("bad stripes window in SAL header", "peer", remote.Endpoint)
		reject(wire.StatusBadRequest, streamProtocol)
		return
	}
	id, err := ParseServiceID(open.Service)
	if err != nil {
		h.log.Debug("bad service ID in SAL header", "peer", remote.Endpoint, "err", err)
		reject(wire.StatusBadRequest, streamProtocol)
		return
	}
	if k, ok := id.Key(); ok && k != h.id.fp {
		reject(wire.StatusNoListener, streamRejected)
		return
	}
	h.mu.Lock()
	l := h.listeners[id.LookupName()]
	h.mu.Unlock()
	if l == nil {
		reject(wire.StatusNoListener, streamRejected)
		return
	}
	c := h.newConn(false, id, open.FlowID, key, true, h.LocalAddr(), remote.Endpoint)
	if l.service != id {
		c.acct = h.counters(l.service) // count under the name the Listener was opened with
	}
	if v, ok := wire.LookupTLV(open.Ext, wire.ExtSecret); ok && len(v) == secretLen {
		copy(c.secret[:], v)
	}
	if !h.addFlow(c) {
		reject(wire.StatusRefused, streamRejected) // the dialer reused a live flow ID
		return
	}
	if st := l.reserve(sess); st != wire.StatusOK {
		h.forgetFlow(c)
		reject(st, streamRejected)
		return
	}
	c.queuedOn = sess
	var ext []byte
	if stripes {
		ext = h.stripesExt()
	}
	b, _ := wire.AppendReply(nil, wire.Reply{Status: wire.StatusOK, Ext: ext})
	s.SetWriteDeadline(time.Now().Add(h.cfg.openTimeout()))
	if _, err := s.Write(b); err != nil {
		l.unreserve(sess)
		h.forgetFlow(c)
		s.CancelRead(streamProtocol)
		s.CancelWrite(streamProtocol)
		return
	}
	s.SetWriteDeadline(time.Time{})
	car, ok := h.newCarrier(s, sess, 0, 0, stripes, peerWin, true)
	if !ok {
		l.unreserve(sess)
		h.forgetFlow(c)
		s.CancelRead(streamLost)
		s.CancelWrite(streamLost)
		return
	}
	c.install(car)
	l.deliver(c)
}

// serverTLS is the identity's server config plus an SNI check: a handshake
// for a service this Host does not serve fails (see alpnNoListener).
// Handshakes without a parseable service in the SNI go ahead; their flows'
// headers decide.
func (h *Host) serverTLS() *tls.Config {
	conf := h.id.serverTLS()
	refuse := conf.Clone()
	refuse.NextProtos = []string{alpnNoListener}
	conf.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		id, err := ParseServiceID(chi.ServerName)
		if err != nil {
			return nil, nil
		}
		if k, ok := id.Key(); ok && k != h.id.fp {
			// Let the handshake finish: the dialer then sees our key and
			// reports the more telling ErrKeyMismatch.
			return nil, nil
		}
		h.mu.Lock()
		serves := h.listeners[id.LookupName()] != nil
		h.mu.Unlock()
		if serves {
			return nil, nil
		}
		return refuse, nil
	}
	return conf
}
