package resolve

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/roamnet/roam/resolve/internal/regwire"
)

// registryConn is one client's connection to the registry.
type registryConn struct {
	r      *Registry
	qc     *quic.Conn
	ekm    []byte     // the TLS exporter value that this client's proofs sign
	remote netip.Addr // substituted for an unspecified registered address

	mu      sync.Mutex
	leases  int                           // live leases made over this conn
	watches map[uint64]context.CancelFunc // by the Watch request's ID
}

// writeTimeout bounds how long the registry waits on a client that reads
// nothing back: past it the client is cut off, so that it cannot pin the
// registry's goroutines by never reading.
const writeTimeout = 10 * time.Second

func (c *registryConn) serve() {
	r := c.r
	defer func() {
		c.mu.Lock()
		for _, stop := range c.watches {
			stop()
		}
		c.mu.Unlock()
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
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
		answer := c.handle(ctx, f, w)
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

// wireMessage is the text an Error answer carries for err: without the
// op and service of an *Error, which the client's own *Error names.
func wireMessage(err error) string {
	if e, ok := err.(*Error); ok && e.Err != nil {
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
func (c *registryConn) handle(ctx context.Context, f *regwire.Frame, w *regwire.Writer) *regwire.Frame {
	r := c.r
	switch f.Type {
	case regwire.TypeLookup:
		r.counters.lookups.Add(1)
		eps, err := r.view.Resolve(ctx, f.Service)
		if err != nil {
			return errorFrame(f.ID, codeOf(err), wireMessage(err))
		}
		return endpointsFrame(f.ID, eps)
	case regwire.TypeRegister:
		return c.register(f)
	case regwire.TypeRenew:
		return r.renew(f.ID, f.Lease)
	case regwire.TypeWithdraw:
		return r.withdraw(f.ID, f.Lease)
	case regwire.TypeWatch:
		return c.watch(ctx, f, w)
	case regwire.TypeUnwatch:
		c.mu.Lock()
		if stop := c.watches[f.ID]; stop != nil {
			stop()
			delete(c.watches, f.ID)
		}
		c.mu.Unlock()
		return nil // the watch's forwarder sends the closing OK
	}
	return errorFrame(f.ID, regwire.CodeInvalid, fmt.Sprintf("type %#x is not a request", f.Type))
}

func endpointsFrame(id uint64, eps []Endpoint) *regwire.Frame {
	out := make([]regwire.Endpoint, len(eps))
	for i, ep := range eps {
		out[i] = regwire.Endpoint{Addr: ep.Addr, Key: ep.Key, TTL: ep.TTL}
	}
	return &regwire.Frame{Type: regwire.TypeEndpoints, ID: id, Endpoints: out}
}

// codeOf maps an error to the code the client maps back.
func codeOf(err error) regwire.Code {
	switch {
	case errors.Is(err, ErrAllDown): // before ErrNotFound, which it matches too
		return regwire.CodeAllDown
	case errors.Is(err, ErrNotFound):
		return regwire.CodeNotFound
	case errors.Is(err, ErrInvalid):
		return regwire.CodeInvalid
	case errors.Is(err, ErrUnauthenticated):
		return regwire.CodeUnauthenticated
	case errors.Is(err, ErrNotOwner):
		return regwire.CodeNotOwner
	case errors.Is(err, errRegistryLimit):
		return regwire.CodeLimit
	case errors.Is(err, errUnknownLease):
		return regwire.CodeUnknownLease
	}
	return regwire.CodeInternal
}

func (c *registryConn) watch(ctx context.Context, f *regwire.Frame, w *regwire.Writer) *regwire.Frame {
	c.mu.Lock()
	if _, dup := c.watches[f.ID]; dup || len(c.watches) >= c.r.cfg.MaxWatches {
		c.mu.Unlock()
		return errorFrame(f.ID, regwire.CodeLimit, "too many watches, or a watch ID reused")
	}
	wctx, stop := context.WithCancel(ctx)
	c.watches[f.ID] = stop
	c.mu.Unlock()
	ch, err := c.r.view.Watch(wctx, f.Service)
	if err != nil {
		c.mu.Lock()
		delete(c.watches, f.ID)
		c.mu.Unlock()
		stop()
		return errorFrame(f.ID, codeOf(err), wireMessage(err))
	}
	c.r.wg.Go(func() {
		for eps := range ch {
			if w.Send(endpointsFrame(f.ID, eps)) != nil {
				stop()
			}
		}
		// The watch ended: say so, unless the whole connection did.
		if ctx.Err() == nil {
			w.Send(&regwire.Frame{Type: regwire.TypeOK, ID: f.ID})
		}
	})
	return nil
}

func (c *registryConn) register(f *regwire.Frame) *regwire.Frame {
	r := c.r
	r.counters.registrations.Add(1)
	service := strings.ToLower(f.Service)
	ep := Endpoint{Addr: f.Endpoint.Addr, Key: f.Endpoint.Key}
	refuse := func(err error) *regwire.Frame {
		r.counters.refused.Add(1)
		r.cfg.Logger.Debug("registry: registration refused", "service", service, "remote", c.qc.RemoteAddr(), "err", err)
		return errorFrame(f.ID, codeOf(err), wireMessage(err))
	}
	if err := checkServiceName(service); err != nil {
		return refuse(err)
	}
	if !ep.Addr.Addr().IsValid() || ep.Addr.Port() == 0 {
		return refuse(fmt.Errorf("%w: endpoint address %v", ErrInvalid, ep.Addr))
	}
	proof := Proof{PublicKey: f.PublicKey, Signature: f.Signature}
	if err := proof.Verify(proofDomain, c.ekm, service, ep); err != nil {
		return refuse(err)
	}
	// "This machine" means the machine the registration came from.
	if ep.Addr.Addr().IsUnspecified() && c.remote.IsValid() {
		ep.Addr = netip.AddrPortFrom(c.remote, ep.Addr.Port())
	}
	ep.TTL = r.cfg.AnswerTTL

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return refuse(ErrClosed)
	}
	b := r.owners[service]
	if b != nil && b.leases == 0 && time.Now().After(b.until) {
		delete(r.owners, service)
		b = nil
	}
	var bound Fingerprint
	if b != nil {
		bound = b.key
	}
	if err := CheckOwner(service, ep.Key, bound); err != nil {
		return refuse(err)
	}
	k := leaseKey{service, ep.Addr}
	old := r.byAddr[k]
	c.mu.Lock()
	full := old == nil && c.leases >= r.cfg.MaxLeasesPerConn
	c.mu.Unlock()
	switch {
	case full || (old == nil && len(r.leases) >= r.cfg.MaxLeases):
		return refuse(fmt.Errorf("%w: too many registrations", errRegistryLimit))
	case old == nil && b != nil && b.leases >= r.cfg.MaxEndpoints:
		return refuse(fmt.Errorf("%w: %d endpoints for one service", errRegistryLimit, b.leases))
	}
	reg, err := r.mem.Register(r.ctx, service, ep)
	if err != nil {
		return refuse(err)
	}
	if b == nil {
		b = &binding{key: ep.Key}
		r.owners[service] = b
	}
	if old != nil {
		// The same address again (a provider that reconnected): the new
		// registration superseded the old one in r.mem; retire its lease.
		r.dropLease(old, false)
	}
	l := &lease{id: newLeaseID(r.leases), key: k, reg: reg, owner: c}
	l.timer = time.AfterFunc(r.cfg.LeaseTTL, func() { r.expire(l) })
	r.leases[l.id] = l
	r.byAddr[k] = l
	b.leases++
	c.mu.Lock()
	c.leases++
	c.mu.Unlock()
	if h, ok := r.view.(*Health); ok {
		h.Track(service)
	}
	return &regwire.Frame{Type: regwire.TypeLease, ID: f.ID, Lease: l.id, TTL: r.cfg.LeaseTTL}
}

// newLeaseID returns an unguessable lease ID not in use: a lease ID is what
// renews and withdraws a registration, so it must not be guessable.
func newLeaseID(inUse map[uint64]*lease) uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if id := binary.BigEndian.Uint64(b[:]); id != 0 && inUse[id] == nil {
			return id
		}
	}
}

var errUnknownLease = errors.New("resolve: unknown lease")

func (r *Registry) renew(id, leaseID uint64) *regwire.Frame {
	r.counters.renewals.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.leases[leaseID]
	if l == nil || r.closed {
		return errorFrame(id, regwire.CodeUnknownLease, "unknown lease: register again")
	}
	l.timer.Reset(r.cfg.LeaseTTL)
	return &regwire.Frame{Type: regwire.TypeLease, ID: id, Lease: l.id, TTL: r.cfg.LeaseTTL}
}

func (r *Registry) withdraw(id, leaseID uint64) *regwire.Frame {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.leases[leaseID]; l != nil {
		r.dropLease(l, true)
	}
	return &regwire.Frame{Type: regwire.TypeOK, ID: id}
}

func (r *Registry) expire(l *lease) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.leases[l.id] == l {
		r.counters.expired.Add(1)
		r.dropLease(l, true)
	}
}

// dropLease forgets l, withdrawing its endpoint when withdraw is set (not
// when a newer registration of the same address superseded it). r.mu held.
func (r *Registry) dropLease(l *lease, withdraw bool) {
	l.timer.Stop()
	delete(r.leases, l.id)
	if r.byAddr[l.key] == l {
		delete(r.byAddr, l.key)
	}
	if b := r.owners[l.key.service]; b != nil {
		b.leases--
		if b.leases == 0 {
			b.until = time.Now().Add(r.cfg.BindingTTL)
			if h, ok := r.view.(*Health); ok {
				h.Untrack(l.key.service)
			}
		}
	}
	l.owner.mu.Lock()
	l.owner.leases--
	l.owner.mu.Unlock()
	if withdraw {
		l.reg.Close()
	}
}

// checkServiceName accepts DNS-style names: labels of letters, digits and
// hyphens, 1-63 bytes each, 253 in all (case already folded).
func checkServiceName(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("%w: service name of %d bytes", ErrInvalid, len(s))
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: service name %q: bad label %q", ErrInvalid, s, label)
		}
		for i := 0; i < len(label); i++ {
			if ch := label[i]; !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
				return fmt.Errorf("%w: service name %q: byte %q", ErrInvalid, s, ch)
			}
		}
	}
	if _, _, err := IDKey(s); err != nil {
		return err
	}
	return nil
}
