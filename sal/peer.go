package sal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"net/netip"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
)

// peer is the entry for a QUIC connection this Host dialed: its session,
// shared by every flow to the same endpoint, and what dialing and sharing
// it needs (the path it is on, a reference count, an idle timer).
type peer struct {
	host  *Host
	addr  netip.AddrPort
	path  *path         // the further path it is dialed on; nil for ListenAddr's (see paths.go)
	sni   string        // the service the connection was dialed for
	ready chan struct{} // closed when the dial has finished; then conn or err is set

	// Set before ready is closed, read-only after. sess is nil when the
	// dial failed; sess.qc is the connection.
	sess *session
	key  resolve.Fingerprint
	err  error

	// Guarded by Host.mu.
	flows int         // live flows, plus dials holding the peer
	idle  *time.Timer // closes the connection once flows has been 0 for IdleConnTimeout
	gone  bool        // removed from Host.peers
	// failing: its path stopped answering (see watchPath); no flow is
	// placed on it while a path that works is left.
	failing bool
	watched bool // watchPath runs
	// transports the connection is registered with: the one it was dialed
	// on and every one it migrated to. quic-go's Transport.Close ends every
	// connection ever registered with it, so a retired socket may only
	// close once no live connection lists it.
	transports []*transport
}

// getPeer returns the connection to addr, dialing it for service if there
// is none; fresh reports whether this call dialed it. Concurrent callers
// share one dial. The caller holds a reference on the returned peer and
// must give it back with releasePeer.
func (h *Host) getPeer(ctx context.Context, addr netip.AddrPort, service ServiceID) (p *peer, fresh bool, err error) {
	h.keepPaths(addr, service.String(), false) // further paths, in the background
	if p := h.pickPath(addr, nil); p != nil {
		return p, false, nil
	}
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, false, net.ErrClosed
		}
		p := h.peers[addr]
		if p == nil {
			p = &peer{host: h, addr: addr, sni: service.String(), ready: make(chan struct{}), flows: 1}
			h.peers[addr] = p
			h.mu.Unlock()
			h.dialPeer(ctx, p)
			if p.err != nil {
				return nil, false, p.err
			}
			return p, true, nil
		}
		p.holdLocked()
		h.mu.Unlock()

		select {
		case <-p.ready:
		case <-ctx.Done():
			h.releasePeer(p)
			return nil, false, contextErr(ctx)
		}
		if p.err == nil && p.sess.qc.Context().Err() == nil {
			return p, false, nil
		}
		h.releasePeer(p)
		if ctx.Err() != nil {
			return nil, false, contextErr(ctx)
		}
		if p.err != nil && !errors.Is(p.err, context.Canceled) && !errors.Is(p.err, context.DeadlineExceeded) {
			return nil, false, p.err
		}
		// The shared dial failed only because the context of the caller
		// that ran it ended, or the connection has died since: dial again
		// on our own context.
		h.dropPeer(p)
	}
}

func (h *Host) dialPeer(ctx context.Context, p *peer) {
	defer close(p.ready)
	h.mu.Lock()
	t := h.transportOfLocked(p.path)
	p.transports = []*transport{t} // a Rebind meanwhile must keep t open
	h.mu.Unlock()
	conn, err := t.tr.Dial(ctx, net.UDPAddrFromAddrPort(p.addr), h.id.clientTLS(p.sni), h.quicConf)
	if err == nil {
		p.key, err = peerFingerprint(conn.ConnectionState().TLS)
		if err != nil {
			conn.CloseWithError(codeNoError, "bad peer certificate")
		}
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			p.err = &unreachableError{addr: p.addr, err: contextErr(ctx)}
		case isNoListenerAlert(err):
			p.err = fmt.Errorf("%w (refused in the handshake)", ErrNoListener)
		default:
			p.err = &unreachableError{addr: p.addr, err: limitFromClose(err)}
		}
		h.dropPeer(p)
		return
	}
	// Under h.mu, so that Close, which sets closed under it before it
	// waits, either sees the conn and the goroutines (the control loops, the
	// silence watcher) counted in its WaitGroup, or stops them starting.
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		conn.CloseWithError(codeHostClosed, "host closed")
		p.err = net.ErrClosed
		h.dropPeer(p)
		return
	}
	p.sess = h.newSession(conn, true, p.key)
	if h.cfg.silenceTimeout() > 0 && p.path == nil {
		// (A further path's connection is watched by watchPath alone.)
		h.wg.Go(func() { h.watchSilence(p) })
	}
	if h.multipathLocked() {
		p.watched = true
		h.wg.Go(func() { h.watchPath(p) })
	}
	h.mu.Unlock()
	h.log.Debug("connected", "peer", p.addr, "key", p.key, "local", conn.LocalAddr())
	// Forget the peer as soon as its connection dies, so the next flow
	// dials afresh instead of failing on a dead connection.
	context.AfterFunc(conn.Context(), func() {
		h.closedConn(p)
		h.dropPeer(p)
	})
}

// holdLocked takes a reference on p, which stops its idle timer; the
// caller holds Host.mu and gives it back with releasePeer.
func (p *peer) holdLocked() {
	p.flows++
	if p.idle != nil {
		p.idle.Stop()
		p.idle = nil
	}
}

// releasePeer gives back a reference taken by getPeer.
func (h *Host) releasePeer(p *peer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p.flows--
	if p.flows > 0 || p.gone || p.sess == nil {
		return
	}
	h.idleLocked(p)
}

// idleLocked closes p's connection once it has carried no flow for
// IdleConnTimeout, unless it then stands by for another path's flows.
func (h *Host) idleLocked(p *peer) {
	p.idle = time.AfterFunc(h.cfg.idleConnTimeout(), func() {
		h.mu.Lock()
		if p.flows > 0 || p.gone {
			h.mu.Unlock()
			return
		}
		if h.siblingsBusyLocked(p.addr) {
			h.idleLocked(p) // a standby: look again later
			h.mu.Unlock()
			return
		}
		h.removePeerLocked(p)
		h.mu.Unlock()
		p.sess.qc.CloseWithError(codeIdle, "idle")
	})
}

func (h *Host) dropPeer(p *peer) {
	h.mu.Lock()
	h.removePeerLocked(p)
	h.mu.Unlock()
}

func (h *Host) removePeerLocked(p *peer) {
	if p.gone {
		return
	}
	p.gone = true
	if p.idle != nil {
		p.idle.Stop()
		p.idle = nil
	}
	if p.path != nil {
		if k := (pathPeer{p.path, p.addr}); h.pathPeers[k] == p {
			delete(h.pathPeers, k)
		}
	} else if h.peers[p.addr] == p {
		delete(h.peers, p.addr)
	}
	h.closeUnusedLocked()
}

// isNoListenerAlert reports whether a handshake failed with TLS's
// no_application_protocol alert: the listening Host does not serve the
// service named in the SNI (see alpnNoListener), or the peer does not
// speak roam at all. For a dialer both mean nobody serves the service there.
func isNoListenerAlert(err error) bool {
	const noApplicationProtocol = 120 // RFC 8446 §6
	var te *quic.TransportError
	return errors.As(err, &te) && te.ErrorCode == quic.TransportErrorCode(0x100+noApplicationProtocol)
}

// unreachableError reports a connection that could not be established.
type unreachableError struct {
	addr netip.AddrPort
	err  error
}

func (e *unreachableError) Error() string {
	return ErrUnreachable.Error() + ": " + e.addr.String() + ": " + e.err.Error()
}

func (e *unreachableError) Unwrap() []error { return []error{ErrUnreachable, e.err} }
