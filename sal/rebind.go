package sal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// transport is one of the Host's sockets and the quic.Transport on it.
type transport struct {
	tr    *quic.Transport
	pc    net.PacketConn
	local netip.AddrPort
	once  sync.Once
	err   error
}

func (t *transport) close() error {
	t.once.Do(func() {
		t.err = t.tr.Close()
		if err := t.pc.Close(); err != nil && !errors.Is(err, net.ErrClosed) && t.err == nil {
			t.err = err
		}
	})
	return t.err
}

// openTransport opens a socket at localAddr with Config.ListenPacket and
// a quic.Transport on it.
func (h *Host) openTransport(ctx context.Context, localAddr string) (*transport, error) {
	pc, err := h.listen(ctx, "udp", localAddr)
	if err != nil {
		return nil, err
	}
	local, err := addrPortOf(pc.LocalAddr())
	if err != nil {
		pc.Close()
		return nil, err
	}
	return &transport{tr: h.newQUICTransport(pc), pc: pc, local: local}, nil
}

// Rebind moves the Host to a new socket at localAddr ("ip:0" means any
// port), as when the address it used went away:
//
//   - every connection the Host dialed migrates to the new socket by QUIC
//     connection migration (probe the new path, then switch), so its flows
//     only pause for about a round trip;
//   - a connection that cannot migrate is closed, and its flows resume on
//     a new connection from the new socket;
//   - connections that peers dialed to the old address cannot follow (QUIC
//     lets only clients migrate): they are closed with a "moved" signal,
//     and the dialers resume their flows at the new address;
//   - every Listener is registered at the new address;
//   - the old socket closes as soon as no migrated connection needs it.
//
// ctx bounds the path probes; connections whose probe has not succeeded
// by then resume instead.
func (h *Host) Rebind(ctx context.Context, localAddr string) error {
	h.rebinding.Lock()
	defer h.rebinding.Unlock()
	op := func(err error) error { return &OpError{Op: "rebind", Service: localAddr, Err: err} }
	if h.isClosed() {
		return op(net.ErrClosed)
	}
	t, err := h.openTransport(ctx, localAddr)
	if err != nil {
		return op(err)
	}
	local := t.local

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		t.close()
		return op(net.ErrClosed)
	}
	var qln *quic.Listener
	if h.qln != nil {
		if qln, err = t.tr.Listen(h.serverTLS(), h.listenConf); err != nil {
			h.mu.Unlock()
			t.close()
			return op(err)
		}
	}
	old, oldQln := h.cur, h.qln
	h.cur, h.qln = t, qln
	h.retired = append(h.retired, old)
	var peers []*peer
	for _, p := range h.peers {
		if p.sess != nil {
			peers = append(peers, p)
		}
	}
	inbound := make([]*quic.Conn, 0, len(h.inbound))
	for c := range h.inbound {
		inbound = append(inbound, c)
	}
	listeners := make([]*Listener, 0, len(h.listeners))
	for _, l := range h.listeners {
		listeners = append(listeners, l)
	}
	if qln != nil {
		h.wg.Go(func() { h.acceptConns(qln) }) // under h.mu, as Close sets closed before it waits
	}
	h.mu.Unlock()
	if oldQln != nil {
		oldQln.Close()
	}
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() { h.migrate(ctx, p, t, old.local) })
	}
	// Register the new address before telling dialers to move, so that
	// when they look the service up again they find it.
	var errs []error
	for _, l := range listeners {
		if err := l.reregister(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range inbound {
		c.CloseWithError(codeMoved, "host moved")
	}
	wg.Wait()

	h.mu.Lock()
	h.closeUnusedLocked()
	h.mu.Unlock()
	h.emit(Event{Kind: EventRebound, From: old.local, To: local})
	h.log.Debug("rebound", "from", old.local, "to", local)
	if len(errs) > 0 {
		return op(errors.Join(errs...))
	}
	return nil
}

// migrate moves p's connection onto t, or, failing that, closes it so its
// flows resume on a new connection.
//
// When a flow awaits the peer's acknowledgement, the path probe may be
// stuck: quic-go sends PATH_CHALLENGE only when the congestion window has
// room, and a sender that filled the window on a path that just died gets
// no acknowledgements to open it again (seen on the hsr-300 trace, where
// the flows then stalled 4.4 s instead of under one). So the probe races a
// fresh handshake to the same peer from the new socket, started at once,
// and whichever answers first carries the flows on: a probe that wins
// closes the fresh connection unused; a handshake that wins while the old
// connection still hears nothing takes its place in h.peers, and the old
// connection closes "moved" so that its flows resume on the new one (one
// race per connection, however many flows it carries). While the old
// connection still hears packets, its path works and the window opens, so
// the probe is only late, not stuck: the migration then waits for it,
// unless the connection falls silent for a probeSilence (a busy machine,
// the race detector on two cores, can make a probe late by far more than
// a PTO).
//
// An idle connection does not race: its probe leaves at once, and on an
// equally slow new path it answers in the same round trip as a handshake,
// which would cost both Hosts a handshake per connection and move at best
// nothing; at worst it would turn a migration into a resume. It waits for
// the probe's answer, however slow the new path, up to the ceiling.
func (h *Host) migrate(ctx context.Context, p *peer, t *transport, from netip.AddrPort) {
	ctx, cancel := context.WithTimeout(ctx, 2*h.cfg.endpointTimeout())
	defer cancel()
	began := time.Now()
	var fresh *freshDial
	if p.sess.awaitsPeer() {
		fresh = h.dialFresh(ctx, p)
		defer fresh.drop() // unless adopted
	}
	path, err := p.sess.qc.AddPath(t.tr)
	if err == nil {
		h.mu.Lock()
		p.transports = append(p.transports, t) // registered from the first probe on
		h.mu.Unlock()
		if err = h.probe(ctx, p.sess.qc, path, fresh); err == nil {
			err = path.Switch()
		}
		if err != nil {
			path.Close()
		}
	}
	if err != nil {
		if fresh != nil && h.takeOver(p, fresh, time.Since(began)) {
			return
		}
		h.log.Debug("migration failed; flows will resume", "peer", p.addr, "err", err)
		p.sess.qc.CloseWithError(codeMoved, "migration failed")
		return
	}
	p.sess.migrated()
	stats := p.sess.qc.ConnectionStats()
	h.emit(Event{Kind: EventMigrated, From: from, To: t.local, RTT: stats.SmoothedRTT})
}

// errProbeLost is the cause of a path probe given up for a fresh
// connection.
var errProbeLost = errors.New("path probe given up: the old path is silent and a fresh handshake got through")

// probeGrace is how long a fresh connection that is ready waits for the
// probe before it counts as the winner: an answer to the probe that came
// in the same instant as the handshake's (a tie in virtual time, where
// crypto costs nothing) wins, since migrating costs the flows no resume.
const probeGrace = 2 * time.Millisecond

// probe validates path. When fresh is not nil, it races fresh's
// handshake, and gives the probe up (errProbeLost) once that handshake has
// completed and qc has heard nothing since the probe began, or nothing for
// a probeSilence after that (see migrate).
func (h *Host) probe(ctx context.Context, qc *quic.Conn, path *quic.Path, fresh *freshDial) error {
	heard := qc.ConnectionStats().PacketsReceived
	pctx, pcancel := context.WithCancelCause(ctx)
	defer pcancel(nil)
	probed := make(chan error, 1)
	if !h.spawn(func() { probed <- path.Probe(pctx) }) { // ends with pctx at the latest
		return net.ErrClosed
	}
	if fresh == nil {
		return <-probed
	}
	giveUp := func() error {
		pcancel(errProbeLost)
		<-probed
		return errProbeLost
	}
	ready := fresh.np.ready
	var look <-chan time.Time // once the fresh dial is over and the old connection still hears packets
	var wait time.Duration
	var lookedAt time.Time
	for {
		select {
		case err := <-probed:
			return err
		case <-ready:
			ready = nil
			if fresh.np.err == nil {
				grace := time.NewTimer(probeGrace)
				select {
				case err := <-probed:
					grace.Stop()
					return err
				case <-grace.C:
				}
				if qc.ConnectionStats().PacketsReceived == heard {
					return giveUp()
				}
			}
		case <-look:
			// A look far later than asked for says this process was not
			// running, quic-go's receiver included: what it did not count
			// may sit in the socket buffer. Look once more instead.
			late := time.Since(lookedAt) > wait+wait/2
			if qc.ConnectionStats().PacketsReceived == heard && !late {
				return giveUp()
			}
		}
		heard = qc.ConnectionStats().PacketsReceived
		wait, lookedAt = h.probeSilence(qc.ConnectionStats()), time.Now()
		look = time.After(wait)
	}
}

// freshDial is a handshake to a peer's address that races a migration's
// path probe.
type freshDial struct {
	np      *peer
	cancel  context.CancelFunc
	adopted bool // np took the old peer's place
}

// dialFresh starts a handshake to p's address from the Host's current
// socket. The dial's goroutine ends with ctx at the latest, and migrate
// waits for it (drop) before it returns.
func (h *Host) dialFresh(ctx context.Context, p *peer) *freshDial {
	ctx, cancel := context.WithCancel(ctx)
	f := &freshDial{np: &peer{host: h, addr: p.addr, sni: p.sni, ready: make(chan struct{}), flows: 1}, cancel: cancel}
	if !h.spawn(func() { h.dialPeer(ctx, f.np) }) {
		f.np.err = net.ErrClosed
		close(f.np.ready)
	}
	return f
}

// drop ends a fresh dial that was not adopted: it cancels the handshake,
// waits for it, and closes its connection if it got one.
func (f *freshDial) drop() {
	f.cancel()
	<-f.np.ready
	if !f.adopted && f.np.err == nil {
		f.np.sess.qc.CloseWithError(codeIdle, "not needed")
	}
}

// takeOver puts the connection of fresh, once its dial is over, in p's
// place, and closes p's connection so that its flows resume on the new one,
// as replaceSilent does. If another Host answers at p's address (another
// key, or a refusal of the service), p's peer has left it: p's connection
// closes and the flows resume wherever the service now is. It reports
// whether p's connection was closed.
func (h *Host) takeOver(p *peer, fresh *freshDial, stall time.Duration) bool {
	<-fresh.np.ready
	np := fresh.np
	left := errors.Is(np.err, ErrNoListener) || (np.err == nil && np.key != p.key)
	if np.err != nil && !left {
		return false
	}
	h.mu.Lock()
	replace := !left && !h.closed && !p.gone && !np.gone && h.peers[p.addr] == p
	if replace {
		h.removePeerLocked(p)
		h.peers[p.addr] = np
	}
	h.mu.Unlock()
	if !replace {
		if !left {
			return false // p is gone already, or the Host closed: nothing to take over
		}
		h.log.Debug("migration: another host answers at the peer's address", "peer", p.addr)
		p.sess.qc.CloseWithError(codeMoved, "migration failed; another host answers")
		return true
	}
	fresh.adopted = true
	h.releasePeer(np) // the flows take it up as they resume; until then it idles
	h.log.Debug("migration: a fresh connection beat the path probe", "peer", p.addr, "after", stall)
	h.emit(Event{Kind: EventReplaced, To: p.addr, Stall: stall})
	p.sess.qc.CloseWithError(codeMoved, "migration probe stuck; replaced")
	return true
}

// probeSilence is how long a migration whose fresh connection is up lets
// the old connection, which still heard packets then, hear nothing before
// it gives up its path probe for the fresh connection: one PTO, within a
// floor against a descheduled process and a ceiling against a terrible
// path. A PTO without a single packet then says the old path is dead and
// the probe is likely stuck behind the window; waiting RFC 9000's three
// PTOs (section 8.2.4) doubled the hsr-300 stall (1.3 s against 0.68 s).
func (h *Host) probeSilence(stats quic.ConnectionStats) time.Duration {
	return min(max(pto(stats), 150*time.Millisecond), 2*h.cfg.endpointTimeout())
}

// closeUnusedLocked closes retired sockets no live connection needs.
func (h *Host) closeUnusedLocked() {
	h.retired = slices.DeleteFunc(h.retired, func(t *transport) bool {
		for _, p := range h.peers {
			if slices.Contains(p.transports, t) {
				return false
			}
		}
		// Closing may block on quic-go's connection teardown; never
		// under h.mu. (A closed Host has no retired sockets left: Close
		// took them.)
		h.spawnLocked(func() { t.close() })
		return true
	})
}

// reregister registers l at the Host's current address and then withdraws
// the old registration, so that the service is never unlisted meanwhile.
func (l *Listener) reregister(ctx context.Context) error {
	r, err := l.h.register(ctx, l.name)
	if err != nil {
		return fmt.Errorf("re-register %s: %w", l.service, err)
	}
	if r == nil {
		return nil // nothing takes registrations
	}
	l.mu.Lock()
	old := l.reg
	l.reg = r
	closed := l.closed
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	if closed {
		r.Close()
	}
	return nil
}
