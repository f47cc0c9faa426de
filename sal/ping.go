package sal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal/internal/wire"
)

// Probe checks that ep serves service, as Ping does, for a health checker:
// a *Host is a resolve.Prober, so resolve.NewHealth(r, host, cfg) keeps
// endpoints that stopped answering out of r's answers.
func (h *Host) Probe(ctx context.Context, service string, ep resolve.Endpoint) error {
	_, err := h.Ping(ctx, service, ep)
	return err
}

// Ping asks the Host at ep whether it serves service and returns the round
// trip time of the question. It travels on the connection that flows to
// ep use (dialing one if there is none, with the key pinned by the service
// ID or ep.Key checked as Dial checks it), so a ping that succeeds vouches
// for the path, the peer's identity and its listener. The peer creates no
// flow and its Listener sees nothing.
//
// Errors are *OpError values wrapping ErrNoListener (the peer does not
// serve the service), ErrUnreachable (no answer; a context error is
// wrapped too when ctx ended first), ErrKeyMismatch, ErrUnauthenticated,
// ErrProtocol, ErrInvalidServiceID or net.ErrClosed. A peer that vanished
// makes Ping fail when ctx ends, never later, so give ctx a deadline.
func (h *Host) Ping(ctx context.Context, service string, ep resolve.Endpoint) (time.Duration, error) {
	op := &OpError{Op: "ping", Service: service, Endpoint: ep.Addr}
	id, err := ParseServiceID(service)
	if err != nil {
		op.Err = err
		return 0, op
	}
	op.Service = id.String()
	rtt, err := h.ping(ctx, id, ep)
	if err != nil {
		op.Err = err
		return 0, op
	}
	return rtt, nil
}

func (h *Host) ping(ctx context.Context, id ServiceID, ep resolve.Endpoint) (time.Duration, error) {
	if h.isClosed() {
		return 0, net.ErrClosed
	}
	pin, pinned := id.Key()
	if !pinned && !ep.Key.IsZero() {
		pin, pinned = ep.Key, true
	}
	if !pinned && h.cfg.RequireAuthentication {
		return 0, ErrUnauthenticated
	}
	addr := dialable(ep.Addr)
	p, _, err := h.getPeer(ctx, addr, id)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ErrUnreachable) {
			// Waiting on another caller's dial: say why as that dial would.
			err = &unreachableError{addr: addr, err: err}
		}
		return 0, err
	}
	defer h.releasePeer(p)
	if pinned && p.key != pin {
		return 0, fmt.Errorf("%w: peer holds %s, want %s", ErrKeyMismatch, p.key, pin)
	}
	req, err := wire.AppendPing(nil, wire.Ping{Service: id.String()})
	if err != nil {
		return 0, err
	}

	start := time.Now()
	s, err := p.sess.qc.OpenStreamSync(ctx)
	if err != nil {
		return 0, pingErr(ctx, p, err)
	}
	// Whatever happens, the stream must not outlive the ping: a peer that
	// never answers would otherwise hold it open.
	defer s.CancelRead(streamClosed)
	stop := context.AfterFunc(ctx, func() { s.SetDeadline(aLongTimeAgo) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	if _, err := s.Write(req); err != nil {
		s.CancelWrite(streamClosed)
		return 0, pingErr(ctx, p, err)
	}
	s.Close() // the Ping is all we send
	reply, err := wire.ReadReply(s)
	rtt := time.Since(start)
	switch {
	case errors.Is(err, wire.ErrMalformed):
		return 0, fmt.Errorf("%w: %w", ErrProtocol, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return 0, fmt.Errorf("%w: peer ended the stream before its reply to a ping", ErrProtocol)
	case err != nil:
		err = pingErr(ctx, p, err)
		if errors.Is(err, ErrUnreachable) {
			h.dropUnanswered(p)
		}
		return 0, err
	case reply.Status != wire.StatusOK:
		return 0, replyError(reply)
	}
	return rtt, nil
}

// dropUnanswered closes a connection on which a ping went unanswered,
// unless flows use it (they notice a dead path themselves): a peer that
// crashed and came back at the same address cannot tell us that it lost
// the connection, so the next ping must dial afresh rather than wait for
// QUIC's idle timeout.
func (h *Host) dropUnanswered(p *peer) {
	h.mu.Lock()
	unused := p.flows == 1 && !p.gone // our own reference only
	if unused {
		h.removePeerLocked(p)
	}
	h.mu.Unlock()
	if unused {
		p.sess.qc.CloseWithError(codeIdle, "ping unanswered")
	}
}

// pingErr classifies a failed ping exchange: a stream the peer reset is a
// refusal, anything else means the peer did not answer.
func pingErr(ctx context.Context, p *peer, err error) error {
	if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
		// The stream's only deadlines are ctx's, and may fire a hair
		// before ctx reports it.
		<-ctx.Done()
		return &unreachableError{addr: p.addr, err: contextErr(ctx)}
	}
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return &unreachableError{addr: p.addr, err: err}
}

// pingStatus answers a Ping: whether this Host listens on the service. It
// touches no flow and no accept queue.
func (h *Host) pingStatus(ping *wire.Ping) wire.Status {
	id, err := ParseServiceID(ping.Service)
	if err != nil {
		return wire.StatusBadRequest
	}
	if k, ok := id.Key(); ok && k != h.id.fp {
		return wire.StatusNoListener
	}
	h.mu.Lock()
	l := h.listeners[id.LookupName()]
	h.mu.Unlock()
	if l == nil {
		return wire.StatusNoListener
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return wire.StatusNoListener
	}
	return wire.StatusOK
}
