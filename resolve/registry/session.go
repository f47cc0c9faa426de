package registry

import (
	"bufio"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/endpoints"
	"github.com/roamnet/roam/resolve/internal/regwire"
)

// regSession is one connection to the registry, with its single request
// stream.
type regSession struct {
	c   *Client
	qc  *quic.Conn
	str *quic.Stream
	ekm []byte // what proofs on this connection sign
	w   *regwire.Writer

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *regwire.Frame
	watches map[uint64]*registryWatch
	err     error         // why the session ended; set before done closes
	done    chan struct{} // closed when the session has ended
}

func (s *regSession) dead() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// call sends f with a fresh ID and waits for its answer. When w is not nil
// the request opens that watch, and later frames with its ID go to it.
func (s *regSession) call(ctx context.Context, f *regwire.Frame, w *registryWatch) (*regwire.Frame, error) {
	ch := make(chan *regwire.Frame, 1)
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return nil, s.err
	}
	s.nextID++
	f.ID = s.nextID
	s.pending[f.ID] = ch
	if w != nil {
		s.watches[f.ID] = w
	}
	s.mu.Unlock()
	if err := s.w.Send(f); err != nil {
		s.fail(err)
		return nil, s.err
	}
	select {
	case a := <-ch:
		if a == nil {
			return nil, s.err
		}
		if a.Type == regwire.TypeError {
			if w != nil {
				s.forget(f.ID)
			}
			return nil, parseCode(a)
		}
		return a, nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pending, f.ID)
		if w != nil {
			delete(s.watches, f.ID)
		}
		s.mu.Unlock()
		if w != nil {
			// The registry may have opened the watch already: close it
			// there too, or it counts against MaxWatchesPerConn for as
			// long as the connection lives. Best effort, as in stop.
			s.w.Send(&regwire.Frame{Type: regwire.TypeUnwatch, ID: f.ID})
		}
		if ctx.Err() == context.DeadlineExceeded && s.c.ctx.Err() == nil {
			// The registry stopped answering: start afresh rather than
			// queue more requests behind this one.
			s.qc.CloseWithError(codeRegistryProto, "request timed out")
		}
		return nil, context.Cause(ctx)
	}
}

func (s *regSession) forget(id uint64) {
	s.mu.Lock()
	delete(s.watches, id)
	s.mu.Unlock()
}

// read routes answers to their callers and pushes to their watches, until
// the connection ends.
func (s *regSession) read() {
	src := &readErrKeeper{r: s.str}
	br := bufio.NewReaderSize(src, 16<<10)
	var buf []byte
	for {
		f, b, err := regwire.Read(br, buf)
		buf = b
		if err != nil {
			if src.err != nil && !errors.Is(src.err, io.EOF) {
				// The stream failed, say because the registry closed the
				// connection over a limit: that is the news, not the
				// frame it cut short.
				err = src.err
			}
			s.fail(err)
			return
		}
		s.mu.Lock()
		ch := s.pending[f.ID]
		delete(s.pending, f.ID)
		w := s.watches[f.ID]
		if w != nil && ch == nil && f.Type != regwire.TypeEndpoints {
			// The registry ended the watch: reopen it on the next session,
			// or now if the refusal was final.
			delete(s.watches, f.ID)
		}
		s.mu.Unlock()
		switch {
		case ch != nil:
			if w != nil && f.Type == regwire.TypeEndpoints {
				w.offer(fromWire(f.Endpoints)) // here, so that no later push overtakes it
			}
			ch <- f
		case w != nil && f.Type == regwire.TypeEndpoints:
			w.offer(fromWire(f.Endpoints))
		case w != nil:
			s.c.cfg.Logger.Debug("registry: watch ended by the registry", "service", w.service)
			w.end()
		}
	}
}

// readErrKeeper keeps the error its reader returned, which regwire.Read
// reports only as text.
type readErrKeeper struct {
	r   io.Reader
	err error
}

func (k *readErrKeeper) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	if err != nil {
		k.err = err
	}
	return n, err
}

// fail ends the session: callers waiting get resolve.ErrUnavailable, and the
// supervisor reconnects if the client still holds state.
func (s *regSession) fail(cause error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = fmt.Errorf("%w: registry %s: %w", resolve.ErrUnavailable, s.c.addr, limitFromClose(cause))
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, ch := range pending {
		ch <- nil
	}
	s.qc.CloseWithError(0, "")
	close(s.done)
	c := s.c
	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
	}
	c.mu.Unlock()
	c.poke()
}

// registryReg is a live registration held by a Client.
type registryReg struct {
	c       *Client
	service string
	ep      resolve.Endpoint
	key     crypto.Signer

	mu      sync.Mutex
	lease   uint64
	sess    *regSession // the session the lease was last confirmed on
	renewAt time.Time   // guarded by c.mu
}

// Register registers ep under the client's Signer (ClientConfig),
// which must be the key ep pins, or any key when ep pins none.
func (c *Client) Register(ctx context.Context, service string, ep resolve.Endpoint) (resolve.Registration, error) {
	if c.cfg.Signer == nil {
		key, _ := resolve.ServiceKey("register", service)
		return nil, &resolve.Error{Op: "register", Service: key, Err: fmt.Errorf(
			"%w: the registry needs proof of the service's key: set registry.ClientConfig.Signer or use RegisterSigned", resolve.ErrUnsigned)}
	}
	return c.RegisterSigned(ctx, service, ep, c.cfg.Signer)
}

// RegisterSigned registers ep for service, proving with key that the
// caller holds the service. The registration lives until Close, renewed
// in the background and restored after a registry restart.
func (c *Client) RegisterSigned(ctx context.Context, service string, ep resolve.Endpoint, key crypto.Signer) (resolve.Registration, error) {
	svc, err := resolve.ServiceKey("register", service)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (resolve.Registration, error) {
		return nil, &resolve.Error{Op: "register", Service: svc, Err: err}
	}
	fp, err := resolve.FingerprintOf(key.Public())
	if err != nil {
		return fail(fmt.Errorf("%w: %w", resolve.ErrInvalid, err))
	}
	if ep.Key.IsZero() {
		ep.Key = fp
	}
	if ep.Key != fp {
		return fail(fmt.Errorf("%w: the endpoint pins %s but the key is %s", resolve.ErrInvalid, ep.Key, fp))
	}
	if !ep.Addr.IsValid() || ep.Addr.Port() == 0 {
		return fail(fmt.Errorf("%w: endpoint address %v", resolve.ErrInvalid, ep.Addr))
	}
	r := &registryReg{c: c, service: svc, ep: ep, key: key}
	cctx, cancel := c.bound(ctx)
	defer cancel()
	s, err := c.session(cctx)
	if err == nil {
		err = r.register(cctx, s)
	}
	if err != nil {
		return fail(err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		r.withdraw()
		return fail(resolve.ErrClosed)
	}
	c.regs[r] = struct{}{}
	c.mu.Unlock()
	return r, nil
}

// register sends a fresh, signed registration on s.
func (r *registryReg) register(ctx context.Context, s *regSession) error {
	proof, err := resolve.Sign(r.key, proofDomain, s.ekm, r.service, r.ep)
	if err != nil {
		return err
	}
	f, err := s.call(ctx, &regwire.Frame{
		Type: regwire.TypeRegister, Service: r.service,
		Endpoint:  regwire.Endpoint{Addr: r.ep.Addr, Key: r.ep.Key},
		PublicKey: proof.PublicKey, Signature: proof.Signature,
	}, nil)
	if err != nil {
		return err
	}
	return r.leased(s, f)
}

func (r *registryReg) leased(s *regSession, f *regwire.Frame) error {
	if f.Type != regwire.TypeLease {
		return unexpected(f)
	}
	r.mu.Lock()
	r.lease, r.sess = f.Lease, s
	r.mu.Unlock()
	ttl := max(f.TTL, 300*time.Millisecond)
	r.c.mu.Lock()
	r.renewAt = time.Now().Add(ttl / 3)
	r.c.mu.Unlock()
	return nil
}

// refresh renews the lease, or registers anew where the registry no
// longer knows it (it restarted, or the lease ran out during an outage).
func (r *registryReg) refresh(s *regSession) error {
	ctx, cancel := r.c.bound(context.Background())
	defer cancel()
	r.mu.Lock()
	id := r.lease
	r.mu.Unlock()
	f, err := s.call(ctx, &regwire.Frame{Type: regwire.TypeRenew, Lease: id}, nil)
	if err == nil {
		return r.leased(s, f)
	}
	if s.dead() {
		return err
	}
	r.c.cfg.Logger.Debug("registry: lease unknown, registering again", "service", r.service, "err", err)
	if err := r.register(ctx, s); err != nil {
		// Try again in a second rather than at every tick.
		r.c.mu.Lock()
		r.renewAt = time.Now().Add(time.Second)
		r.c.mu.Unlock()
		return err
	}
	return nil
}

// Close withdraws the registration.
func (r *registryReg) Close() error {
	c := r.c
	c.mu.Lock()
	_, live := c.regs[r]
	delete(c.regs, r)
	c.mu.Unlock()
	if live {
		r.withdraw()
	}
	return nil
}

// withdraw tells the registry at once, when connected, rather than let the
// lease run out.
func (r *registryReg) withdraw() {
	r.c.mu.Lock()
	s := r.c.sess
	r.c.mu.Unlock()
	r.mu.Lock()
	id := r.lease
	r.mu.Unlock()
	if s == nil || id == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.call(ctx, &regwire.Frame{Type: regwire.TypeWithdraw, Lease: id}, nil)
}

// registryWatch is one Watch call's state, kept across sessions.
type registryWatch struct {
	c       *Client
	service string

	mu     sync.Mutex
	ch     chan []resolve.Endpoint
	last   []resolve.Endpoint
	closed bool
}

// Watch pushes the service's endpoints now and after every change, until
// ctx ends. It survives a registry outage: the channel stays open, and the
// current set follows when the client has reconnected.
func (c *Client) Watch(ctx context.Context, service string) (<-chan []resolve.Endpoint, error) {
	key, err := resolve.ServiceKey("watch", service)
	if err != nil {
		return nil, err
	}
	w := &registryWatch{c: c, service: key, ch: make(chan []resolve.Endpoint, 1)}
	cctx, cancel := c.bound(ctx)
	defer cancel()
	s, err := c.session(cctx)
	var first *regwire.Frame
	if err == nil {
		first, err = s.call(cctx, &regwire.Frame{Type: regwire.TypeWatch, Service: key}, w)
	}
	if err == nil && first.Type != regwire.TypeEndpoints {
		err = unexpected(first)
	}
	if err != nil {
		return nil, &resolve.Error{Op: "watch", Service: key, Err: err}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		w.end()
		return w.ch, nil
	}
	c.watches[w] = struct{}{}
	c.mu.Unlock()
	context.AfterFunc(ctx, func() { c.unwatch(w) })
	return w.ch, nil
}

// rewatch reopens w on a new session.
func (s *regSession) rewatch(w *registryWatch) error {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return s.err
	}
	s.nextID++
	id := s.nextID
	s.watches[id] = w
	s.mu.Unlock()
	if err := s.w.Send(&regwire.Frame{Type: regwire.TypeWatch, ID: id, Service: w.service}); err != nil {
		s.fail(err)
		return err
	}
	return nil
}

// unwatch ends w when its caller's context does.
func (c *Client) unwatch(w *registryWatch) {
	c.mu.Lock()
	delete(c.watches, w)
	s := c.sess
	c.mu.Unlock()
	w.end()
	if s == nil {
		return
	}
	s.mu.Lock()
	var id uint64
	for k, v := range s.watches {
		if v == w {
			id = k
			delete(s.watches, k)
		}
	}
	s.mu.Unlock()
	if id != 0 {
		// Best effort: the registry forgets the watch anyway when the
		// connection ends.
		s.w.Send(&regwire.Frame{Type: regwire.TypeUnwatch, ID: id})
	}
}

// offer hands the newest set to the watcher, replacing one it has not read.
func (w *registryWatch) offer(eps []resolve.Endpoint) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || (w.last != nil && endpoints.Same(w.last, eps)) {
		return
	}
	if eps == nil {
		eps = []resolve.Endpoint{}
	}
	w.last = eps
	select {
	case <-w.ch:
	default:
	}
	w.ch <- eps
}

func (w *registryWatch) end() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
}
