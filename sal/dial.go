package sal

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal/internal/wire"
)

// DialContext dials a service in the form net.Dialer.DialContext takes, so
// that a Host drops into http.Transport.DialContext. network is "sal",
// "tcp", "tcp4", "tcp6" or ""; address is "service" or "service:port"
// (the port is ignored: a service ID names the service, whichever port
// carries it), as an Addr's String gives it.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "", "sal", "tcp", "tcp4", "tcp6":
	default:
		return nil, &OpError{Op: "dial", Service: address, Err: fmt.Errorf("%w %q", ErrBadNetwork, network)}
	}
	service := address
	if host, _, err := net.SplitHostPort(address); err == nil {
		service = host
	}
	c, err := h.Dial(ctx, service)
	if err != nil {
		return nil, err // never a typed nil inside the interface
	}
	return c, nil
}

// DialAddr is DialContext with no network: address is "service" or
// "service:port", the port ignored. It has the type
// grpc.WithContextDialer takes, so a gRPC client reaches a service by
// name. Give grpc.NewClient the target "passthrough:///service", so that
// gRPC hands the name to DialAddr as it is (its default, DNS, would look
// the name up and find nothing), and insecure transport credentials: the
// flow is already TLS 1.3, authenticated when a key is pinned.
//
//	cc, err := grpc.NewClient("passthrough:///grpc.demo",
//		grpc.WithContextDialer(h.DialAddr),
//		grpc.WithTransportCredentials(insecure.NewCredentials()))
func (h *Host) DialAddr(ctx context.Context, address string) (net.Conn, error) {
	return h.DialContext(ctx, "sal", address)
}

// Dial opens a flow to a service. The service table decides where the
// service is; when it has several endpoints, successive flows are spread
// across them, and a dial fails over to the next endpoint when one does not
// answer within Config.EndpointTimeout. Once Dial returns, ctx no longer
// governs the flow.
func (h *Host) Dial(ctx context.Context, service string) (*Conn, error) {
	id, err := ParseServiceID(service)
	if err != nil {
		return nil, &OpError{Op: "dial", Service: service, Err: err}
	}
	return h.DialService(ctx, id)
}

// DialService is Dial for a parsed service ID.
func (h *Host) DialService(ctx context.Context, id ServiceID) (*Conn, error) {
	op := &OpError{Op: "dial", Service: id.String()}
	if h.isClosed() {
		op.Err = net.ErrClosed
		return nil, op
	}
	eps, err := h.endpoints(ctx, id)
	if err != nil {
		op.Err = err
		return nil, op
	}
	var errs []error
	for i, ep := range eps {
		c, err := h.dialEndpoint(ctx, id, ep, i == len(eps)-1)
		if err == nil {
			return c, nil
		}
		h.log.Debug("dial attempt failed", "service", id, "endpoint", ep.Addr, "err", err)
		op.Endpoint = ep.Addr
		errs = append(errs, err)
		if ctx.Err() != nil {
			errs = []error{contextErr(ctx)}
			break
		}
	}
	if len(errs) == 1 {
		op.Err = errs[0]
	} else {
		op.Endpoint = netip.AddrPort{}
		op.Err = fmt.Errorf("all %d endpoints failed: %w", len(eps), errors.Join(errs...))
	}
	return nil, op
}

func (h *Host) dialEndpoint(ctx context.Context, id ServiceID, ep resolve.Endpoint, last bool) (*Conn, error) {
	pin, pinned := id.Key()
	if !pinned && !ep.Key.IsZero() {
		pin, pinned = ep.Key, true
	}
	if !pinned && h.cfg.RequireAuthentication {
		return nil, ErrUnauthenticated
	}
	if !last {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.cfg.endpointTimeout())
		defer cancel()
	}
	return h.dialEndpointOnce(ctx, id, ep, pin, pinned, false)
}

func (h *Host) dialEndpointOnce(ctx context.Context, id ServiceID, ep resolve.Endpoint, pin resolve.Fingerprint, pinned, retried bool) (*Conn, error) {
	p, fresh, err := h.getPeer(ctx, dialable(ep.Addr), id)
	if err != nil {
		return nil, err
	}
	if pinned && p.key != pin {
		h.releasePeer(p)
		return nil, fmt.Errorf("%w: peer holds %s, want %s", ErrKeyMismatch, p.key, pin)
	}
	// On a connection dialed for this very service, the handshake has
	// already told us the peer serves it (see alpnNoListener): the flow
	// opens without waiting for the Reply, which Read takes later.
	c, err := h.openFlow(ctx, p, id, pinned, fresh && p.sni == id.String())
	if err == nil {
		return c, nil
	}
	h.releasePeer(p)
	if !retried && closedForRedial(err) && ctx.Err() == nil {
		// The peer closed the connection as the flow opened on it, and
		// not for this flow's sake: it went idle there, or made room for
		// a newer one. A new connection will do.
		h.dropPeer(p)
		return h.dialEndpointOnce(ctx, id, ep, pin, pinned, true)
	}
	return nil, err
}

// closedForRedial reports a connection the peer closed because it was
// idle or to make room (codeIdle, codeMoved), which says nothing about a
// new one.
func closedForRedial(err error) bool {
	var ae *quic.ApplicationError
	return errors.As(err, &ae) && ae.Remote && (ae.ErrorCode == codeIdle || ae.ErrorCode == codeMoved)
}

// openFlow opens a stream on p's connection and writes the flow's Open,
// bounded by ctx. Unless optimistic, it also waits for the Reply; an
// optimistic flow takes its Reply in the background (see Conn.awaitReply).
func (h *Host) openFlow(ctx context.Context, p *peer, id ServiceID, authed, optimistic bool) (*Conn, error) {
	s, err := p.sess.qc.OpenStreamSync(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, contextErr(ctx)
		}
		return nil, limitFromClose(err)
	}
	flowID := h.newFlowID()
	var secret [secretLen]byte
	_, _ = rand.Read(secret[:])
	ext := mustTLV(wire.ExtSecret, secret[:])
	striping := h.cfg.PathPolicy == PathAggregate
	if striping {
		ext = append(ext, h.stripesExt()...)
	}
	hdr, err := wire.AppendOpen(nil, wire.Open{FlowID: flowID, Service: id.String(), Ext: ext})
	if err != nil {
		s.CancelWrite(streamProtocol)
		s.CancelRead(streamProtocol)
		return nil, err
	}

	// The exchange obeys ctx: a deadline bounds it directly, a
	// cancellation cuts it short through a past deadline.
	var mu sync.Mutex
	exchanged := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !exchanged {
			s.SetDeadline(aLongTimeAgo)
		}
	})
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	_, err = s.Write(hdr)
	peerWin := uint64(minStripeWindow) // until the Reply says
	if err == nil && !optimistic {
		var reply wire.Reply
		reply, err = readReply(s)
		if err == nil && striping {
			peerWin, err = agreedStripes(reply)
		}
	}
	mu.Lock()
	exchanged = true
	mu.Unlock()
	stop()
	s.SetDeadline(time.Time{})

	if err != nil {
		s.CancelWrite(streamRejected)
		s.CancelRead(streamRejected)
		if _, hasDeadline := ctx.Deadline(); ctx.Err() != nil || hasDeadline && errors.Is(err, os.ErrDeadlineExceeded) {
			// The stream's deadline is ctx's and may fire a hair earlier.
			<-ctx.Done()
			return nil, contextErr(ctx)
		}
		return nil, limitFromClose(err)
	}
	c := h.newConn(true, id, flowID, p.key, authed, h.LocalAddr(), p.addr)
	c.secret = secret
	if !h.addFlow(c) {
		s.CancelWrite(streamRejected)
		s.CancelRead(streamRejected)
		return nil, net.ErrClosed
	}
	car, ok := h.newCarrier(s, p.sess, 0, 0, striping, peerWin, !optimistic)
	if !ok {
		s.CancelWrite(streamLost)
		s.CancelRead(streamLost)
		h.forgetFlow(c)
		return nil, net.ErrClosed
	}
	car.peer = p
	if optimistic {
		car.ready = make(chan struct{})
	}
	if !c.install(car) {
		return nil, net.ErrClosed
	}
	if optimistic {
		h.spawn(func() { c.awaitReply(car) }) // (a closing Host loses the flow itself)
	} else {
		c.addStripes(car)
	}
	h.follow(c)
	c.countOpen()
	return c, nil
}

// awaitReply reads an optimistic flow's Reply; Read waits for it. A
// refusal or garbage ends the flow; a failed connection suspends it like
// any other.
func (c *Conn) awaitReply(car *carrier) {
	reply, err := readReply(car.head)
	if err == nil && car.striped != nil {
		var w uint64
		if w, err = agreedStripes(reply); err == nil {
			car.striped.setPeerWindow(w)
		}
	}
	if err == nil {
		c.replyIn(car)
		return
	}
	// Settle the flow before Read can see the carrier as answered.
	car.err = err
	if errors.Is(err, ErrProtocol) || errors.Is(err, ErrNoListener) || errors.Is(err, ErrBusy) || errors.Is(err, ErrRefused) || errors.Is(err, ErrLimit) {
		c.lose(err)
	} else {
		c.carrierError(car, err, false)
	}
	close(car.ready)
}

// readReply reads a flow's Reply and turns anything but "ok" into an error.
func readReply(s io.Reader) (wire.Reply, error) {
	reply, err := wire.ReadReply(s)
	switch {
	case errors.Is(err, wire.ErrMalformed):
		return reply, fmt.Errorf("%w: %w", ErrProtocol, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return reply, fmt.Errorf("%w: peer ended the stream before its SAL reply", ErrProtocol)
	case err != nil:
		return reply, err
	case reply.Status != wire.StatusOK:
		return reply, replyError(reply)
	}
	return reply, nil
}

// replyError is the error a Reply other than "ok" stands for.
func replyError(r wire.Reply) error {
	if r.Status != wire.StatusLimit {
		return statusError(r.Status)
	}
	e := &LimitError{Limit: "unnamed"}
	if v, ok := wire.LookupTLV(r.Ext, wire.ExtLimit); ok && len(v) >= 4 {
		e.Max = int(binary.BigEndian.Uint32(v))
		if name := v[4:]; len(name) > 0 && len(name) <= 64 {
			e.Limit = Limit(name)
		}
	}
	return e
}

// limitReply is the Reply that refuses a flow over limit e.
func limitReply(e *LimitError) wire.Reply {
	v := binary.BigEndian.AppendUint32(nil, uint32(e.Max))
	v = append(v, e.Limit[:min(len(e.Limit), 64)]...)
	return wire.Reply{Status: wire.StatusLimit, Ext: mustTLV(wire.ExtLimit, v)}
}

func statusError(st wire.Status) error {
	switch st {
	case wire.StatusNoListener, wire.StatusUnavailable:
		return ErrNoListener
	case wire.StatusBusy:
		return ErrBusy
	case wire.StatusRefused:
		return ErrRefused
	case wire.StatusBadRequest:
		return fmt.Errorf("%w: peer says our header was malformed", ErrProtocol)
	case wire.StatusLimit:
		return ErrLimit
	}
	return fmt.Errorf("%w: unknown status %d", ErrProtocol, st)
}
