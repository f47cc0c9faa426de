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
	pc, err := h.listen(ctx, "udp", localAddr)
	if err != nil {
		return op(err)
	}
	local, err := addrPortOf(pc.LocalAddr())
	if err != nil {
		pc.Close()
		return op(err)
	}
	t := &transport{tr: h.newQUICTransport(pc), pc: pc, local: local}

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
		if p.conn != nil {
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
		h.wg.Add(1) // under h.mu, as Close sets closed before it waits
		go h.acceptConns(qln)
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
func (h *Host) migrate(ctx context.Context, p *peer, t *transport, from netip.AddrPort) {
	ctx, cancel := context.WithTimeout(ctx, 2*h.cfg.endpointTimeout())
	defer cancel()
	if p.ctl.awaitsPeer() {
		// An idle connection hears nothing on a working path too, and its
		// probe leaves at once: it waits for the answer, however slow the
		// new path, up to the ceiling.
		h.abandonWhenSilent(ctx, p.conn, cancel)
	}
	path, err := p.conn.AddPath(t.tr)
	if err == nil {
		h.mu.Lock()
		p.transports = append(p.transports, t) // registered from the first probe on
		h.mu.Unlock()
		if err = path.Probe(ctx); err == nil {
			err = path.Switch()
		}
		if err != nil {
			path.Close()
		}
	}
	if err != nil {
		h.log.Debug("migration failed; flows will resume", "peer", p.addr, "err", err)
		p.conn.CloseWithError(codeMoved, "migration failed")
		return
	}
	p.ctl.migrated()
	stats := p.conn.ConnectionStats()
	h.emit(Event{Kind: EventMigrated, From: from, To: t.local, RTT: stats.SmoothedRTT})
}

// abandonWhenSilent cancels a migration's path probe once the connection
// has heard nothing from the peer for a probeSilence. quic-go sends the
// probe only when its congestion window has room, and a sender that filled
// the window on a path that just died gets no acknowledgements to open it
// again, so the probe may never leave (seen on the hsr-300 trace, where the
// flows then stalled 4.4 s instead of under one). While packets still
// arrive, the old path works and the window opens, so the probe is only
// late, not stuck: waiting then beats a new connection, and a busy machine
// (the race detector on two cores) can make it late by far more than a
// PTO. The goroutine ends with ctx.
func (h *Host) abandonWhenSilent(ctx context.Context, qc *quic.Conn, cancel context.CancelFunc) {
	go func() {
		heard := qc.ConnectionStats().PacketsReceived
		for {
			wait := h.probeSilence(qc.ConnectionStats())
			start := time.Now()
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			now := qc.ConnectionStats().PacketsReceived
			// A look far later than asked for says this process was not
			// running, quic-go's receiver included: what it did not count
			// may sit in the socket buffer. Look once more instead.
			late := time.Since(start) > wait+wait/2
			if now == heard && !late {
				cancel()
				return
			}
			heard = now
		}
	}()
}

// probeSilence is how long a migration lets a connection whose peer owes
// acknowledgements hear nothing before it gives up its path probe and lets
// the flows resume on a new connection: one PTO, within a floor against a
// descheduled process and a ceiling against a terrible path. A PTO without
// a single packet then says the old path is dead and the probe is likely
// stuck behind the window; waiting RFC 9000's three PTOs (section 8.2.4)
// doubled the hsr-300 stall (1.3 s against 0.68 s).
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
		// under h.mu.
		go t.close()
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
