package registry

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/regwire"
	"github.com/roamnet/roam/resolve/internal/shrink"
)

// registryConn is one client's connection to the registry.
type registryConn struct {
	r      *Server
	qc     *quic.Conn
	ekm    []byte     // the TLS exporter value that this client's proofs sign
	remote netip.Addr // substituted for an unspecified registered address
	scope  netip.Addr // what MaxConnsPerAddr counts it under (addrScope)

	mu      sync.Mutex
	leases  int               // live leases made over this conn
	watches map[uint64]func() // each watch's stop, by the Watch request's ID
}

// writeTimeout bounds how long the registry waits on a client that reads
// nothing back: past it the client is cut off, so that it cannot pin the
// registry's goroutines by never reading.
const writeTimeout = 10 * time.Second

func (c *registryConn) serve() {
	r := c.r
	defer func() {
		// The watches end with their stream's context, which ended with
		// the connection's; nothing of this client is left running.
		r.mu.Lock()
		shrink.Delete(&r.conns, c, &r.peaks.conns)
		r.mu.Unlock()
		r.leaveConn(c.scope)
		r.wg.Done()
	}()
	state := c.qc.ConnectionState().TLS
	ekm, err := state.ExportKeyingMaterial(exporterLabel, nil, 32)
	if err != nil {
		c.qc.CloseWithError(codeRegistryProto, "no exporter")
		return
	}
	c.ekm = ekm
	if a, ok := c.qc.RemoteAddr().(*net.UDPAddr); ok {
		c.remote = a.AddrPort().Addr().Unmap()
	}
	ctx := c.qc.Context()
	var streams sync.WaitGroup
	defer streams.Wait()
	for {
		str, err := c.qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		streams.Go(func() { c.serveStream(ctx, str) })
	}
}

// serveStream answers the requests on one stream in order. Answers are
// flushed only when no further request is already buffered, so pipelined
// lookups are answered in batches.
func (c *registryConn) serveStream(ctx context.Context, str *quic.Stream) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := regwire.NewWriter(deadlineWriter{str})
	pushes := &watchPusher{c: c, ctx: ctx, w: w}
	defer func() {
		cancel() // first, so that the pusher sends nothing more
		pushes.endAll()
	}()
	br := bufio.NewReaderSize(str, 16<<10)
	var buf []byte
	for {
		f, b, err := regwire.Read(br, buf)
		buf = b
		if err != nil {
			if errors.Is(err, regwire.ErrMalformed) {
				c.r.cfg.Logger.Debug("registry: malformed request", "remote", c.qc.RemoteAddr(), "err", err)
				c.qc.CloseWithError(codeRegistryProto, "malformed request")
			}
			str.CancelRead(0)
			str.Close()
			return
		}
		answer := c.handle(ctx, f, pushes)
		if answer != nil {
			err = w.Queue(answer)
		}
		if err == nil && br.Buffered() == 0 {
			err = w.Flush()
		}
		if err != nil {
			c.qc.CloseWithError(codeRegistryProto, "client does not read")
			return
		}
	}
}

// deadlineWriter gives every write on a stream its own deadline.
type deadlineWriter struct{ str *quic.Stream }

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.str.SetWriteDeadline(time.Now().Add(writeTimeout))
	return d.str.Write(p)
}

// errorAnswer answers a request that failed with err. A limit is named
// as limitReason says, for the client to read back.
func errorAnswer(id uint64, err error) *regwire.Frame {
	if le := (*resolve.LimitError)(nil); errors.As(err, &le) {
		return errorFrame(id, regwire.CodeLimit, limitReason(le))
	}
	return errorFrame(id, codeOf(err), wireMessage(err))
}

// wireMessage is the text an Error answer carries for err: without the
// op and service of an *Error, which the client's own *Error names.
func wireMessage(err error) string {
	if e, ok := err.(*resolve.Error); ok && e.Err != nil {
		err = e.Err
	}
	return err.Error()
}

func errorFrame(id uint64, code regwire.Code, msg string) *regwire.Frame {
	if len(msg) > regwire.MaxMessage {
		msg = msg[:regwire.MaxMessage]
	}
	return &regwire.Frame{Type: regwire.TypeError, ID: id, Code: code, Message: msg}
}

// handle answers one request; a nil answer means none is due now (a watch
// answers with its pushes).
func (c *registryConn) handle(ctx context.Context, f *regwire.Frame, pushes *watchPusher) *regwire.Frame {
	r := c.r
	switch f.Type {
	case regwire.TypeLookup:
		r.counters.lookups.Add(1)
		eps, err := r.view.Resolve(ctx, f.Service)
		if err != nil {
			return errorAnswer(f.ID, err)
		}
		return endpointsFrame(f.ID, eps)
	case regwire.TypeRegister:
		return c.register(f)
	case regwire.TypeRenew:
		return r.renew(f.ID, f.Lease)
	case regwire.TypeWithdraw:
		return r.withdraw(f.ID, f.Lease)
	case regwire.TypeWatch:
		return c.watch(ctx, f, pushes)
	case regwire.TypeUnwatch:
		c.unwatch(f.ID)
		return nil // the watch's end sends the closing OK
	}
	return errorFrame(f.ID, regwire.CodeInvalid, fmt.Sprintf("type %#x is not a request", f.Type))
}

func endpointsFrame(id uint64, eps []resolve.Endpoint) *regwire.Frame {
	out := make([]regwire.Endpoint, len(eps))
	for i, ep := range eps {
		out[i] = regwire.Endpoint{Addr: ep.Addr, Key: ep.Key, TTL: ep.TTL}
	}
	return &regwire.Frame{Type: regwire.TypeEndpoints, ID: id, Endpoints: out}
}

// codeOf maps an error to the code the client maps back.
func codeOf(err error) regwire.Code {
	switch {
	case errors.Is(err, resolve.ErrAllDown): // before ErrNotFound, which it matches too
		return regwire.CodeAllDown
	case errors.Is(err, resolve.ErrNotFound):
		return regwire.CodeNotFound
	case errors.Is(err, resolve.ErrInvalid):
		return regwire.CodeInvalid
	case errors.Is(err, resolve.ErrUnsigned):
		return regwire.CodeUnauthenticated
	case errors.Is(err, resolve.ErrNotOwner):
		return regwire.CodeNotOwner
	case errors.Is(err, resolve.ErrLimit):
		return regwire.CodeLimit
	case errors.Is(err, errUnknownLease):
		return regwire.CodeUnknownLease
	}
	return regwire.CodeInternal
}
