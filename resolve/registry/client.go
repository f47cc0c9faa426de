package registry

import (
	"context"
	"crypto"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/regwire"
)

// ClientConfig configures a Client. The zero value is
// ready to use, but pins no registry key (see Key).
type ClientConfig struct {
	// Key pins the registry's key. If zero, any registry is trusted: the
	// connection is encrypted but a man in the middle could answer in the
	// registry's place, so pin the key anywhere but a lab. In a registry://
	// URL, a key= that is empty, repeated, malformed or all zero makes
	// resolve.Open fail (resolve.ErrInvalidFingerprint,
	// resolve.ErrZeroFingerprint): leave key= out to pin nothing.
	Key resolve.Fingerprint
	// Signer signs plain Register calls, whose endpoint then pins its key;
	// RegisterSigned brings its own key. If nil, Register fails with
	// resolve.ErrUnsigned.
	Signer crypto.Signer
	// CallTimeout bounds a connection attempt, and a registration,
	// renewal or watch request, when the caller's context sets no earlier
	// deadline; a request that outlives it also ends the connection, which
	// is then dialled afresh. Lookups set no timer of their own: the
	// caller's context bounds them, and so does the connection's idle
	// timeout when the registry goes silent. If zero, 5s.
	CallTimeout time.Duration
	// LocalAddr is the UDP address ("127.0.0.2:0") the client sends from.
	// If empty, the system picks one.
	LocalAddr string
	// QUIC configures the QUIC layer; nil gives roam's defaults.
	QUIC *quic.Config
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Client speaks to a Server over QUIC. It is a resolve.Resolver, a
// resolve.Registrar, a resolve.SignedRegistrar and a resolve.Watcher, and
// is safe for concurrent use.
//
// It connects on first use. While it holds registrations or watches it
// stays connected, reconnecting with backoff after a failure, and then
// restores its state: it renews its leases or, at a restarted registry
// that no longer knows them, registers again (with fresh proofs), and
// re-opens its watches, which stay open across the outage and resume with
// the current set. Requests made while the registry is unreachable fail
// with an error wrapping resolve.ErrUnavailable.
type Client struct {
	addr string
	cfg  ClientConfig

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // wakes the supervisor

	mu         sync.Mutex
	tr         *quic.Transport // made at the first connection
	sess       *regSession     // nil while disconnected
	connecting chan struct{}   // closed when the current attempt ends
	connErr    error
	regs       map[*registryReg]struct{}
	watches    map[*registryWatch]struct{}
	closed     bool
}

var (
	_ resolve.Resolver        = (*Client)(nil)
	_ resolve.Registrar       = (*Client)(nil)
	_ resolve.SignedRegistrar = (*Client)(nil)
	_ resolve.Watcher         = (*Client)(nil)
)

// NewClient returns a client for the registry at addr
// ("host:port"). It does no I/O until first used.
func NewClient(addr string, cfg ClientConfig) (*Client, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%w: registry address %q: %w", resolve.ErrInvalid, addr, err)
	}
	cfg.CallTimeout = orDefault(cfg.CallTimeout, 5*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		addr: addr, cfg: cfg, ctx: ctx, cancel: cancel,
		kick:    make(chan struct{}, 1),
		regs:    make(map[*registryReg]struct{}),
		watches: make(map[*registryWatch]struct{}),
	}
	c.wg.Go(c.supervise)
	return c, nil
}

// openRegistry opens "registry://host:port[?key=fingerprint]".
func openRegistry(_ context.Context, u *url.URL) (resolve.Resolver, error) {
	if u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.Opaque != "" {
		return nil, openError(u.String(), "registry needs host:port, as in registry://127.0.0.1:7700")
	}
	var cfg ClientConfig
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, openError(u.String(), "query: %v", err)
	}
	for k := range q {
		if k != "key" {
			return nil, openError(u.String(), "unknown parameter %q (only key= is known)", k)
		}
	}
	// A key= that is given is a pin, and a pin is always checked: an empty,
	// repeated, malformed or all-zero one is refused, never read as none.
	if keys, ok := q["key"]; ok {
		if len(keys) != 1 {
			return nil, keyError(u, fmt.Errorf("%w: key= given %d times", resolve.ErrInvalidFingerprint, len(keys)))
		}
		if keys[0] == "" {
			return nil, keyError(u, fmt.Errorf("%w: key= is empty (leave it out to pin no key)", resolve.ErrInvalidFingerprint))
		}
		fp, err := resolve.ParseFingerprint(keys[0])
		if err != nil {
			return nil, keyError(u, err)
		}
		cfg.Key = fp
	}
	return NewClient(u.Host, cfg)
}

// openError is resolve.BadURL with a format.
func openError(rawURL, format string, args ...any) error {
	return resolve.BadURL(rawURL, fmt.Sprintf(format, args...))
}

// keyError explains a bad key= in a registry URL; it wraps
// resolve.ErrInvalid and err (resolve.ErrInvalidFingerprint, and
// resolve.ErrZeroFingerprint for the zero pin).
func keyError(u *url.URL, err error) error {
	return fmt.Errorf("%w: resolver URL %q: key: %w", resolve.ErrInvalid, u.Redacted(), err)
}

// Close withdraws the client's registrations (best effort), ends its
// watches and closes its connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	regs := make([]*registryReg, 0, len(c.regs))
	for r := range c.regs {
		regs = append(regs, r)
	}
	c.mu.Unlock()
	for _, r := range regs {
		r.Close()
	}
	c.mu.Lock()
	c.closed = true
	watches := make([]*registryWatch, 0, len(c.watches))
	for w := range c.watches {
		watches = append(watches, w)
	}
	c.mu.Unlock()
	c.cancel()
	for _, w := range watches {
		w.end()
	}
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess != nil {
		sess.fail(resolve.ErrClosed) // ends its reader, which c.wg waits for
	}
	c.wg.Wait()
	c.mu.Lock()
	tr := c.tr
	c.mu.Unlock()
	if tr != nil {
		tr.Close()
		tr.Conn.Close()
	}
	return nil
}

// Resolve asks the registry for a service's endpoints.
func (c *Client) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	key, err := resolve.ServiceKey("resolve", service)
	if err != nil {
		return nil, err
	}
	f, err := c.call(ctx, &regwire.Frame{Type: regwire.TypeLookup, Service: key})
	if err != nil {
		return nil, &resolve.Error{Op: "resolve", Service: key, Err: err}
	}
	if f.Type != regwire.TypeEndpoints {
		return nil, &resolve.Error{Op: "resolve", Service: key, Err: unexpected(f)}
	}
	eps := fromWire(f.Endpoints)
	if len(eps) == 0 {
		return nil, &resolve.Error{Op: "resolve", Service: key, Err: resolve.ErrNotFound}
	}
	return eps, nil
}

// call sends one request on the current session, connecting if need be,
// and returns the answer, mapping an Error answer to the resolve errors.
//
// It sets no timer of its own: a registry that stops answering ends the
// session within the QUIC idle timeout, which fails every pending call.
func (c *Client) call(ctx context.Context, f *regwire.Frame) (*regwire.Frame, error) {
	s, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	return s.call(ctx, f, nil)
}

// bound applies CallTimeout to ctx and ends it at Close.
func (c *Client) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func unexpected(f *regwire.Frame) error {
	return fmt.Errorf("%w: registry answered with type %#x", resolve.ErrUnavailable, f.Type)
}

func fromWire(in []regwire.Endpoint) []resolve.Endpoint {
	out := make([]resolve.Endpoint, len(in))
	for i, ep := range in {
		out[i] = resolve.Endpoint{Addr: ep.Addr, Key: ep.Key, TTL: ep.TTL}
	}
	return out
}

// session returns the live session, connecting (one attempt shared by all
// callers) if there is none.
func (c *Client) session(ctx context.Context) (*regSession, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, resolve.ErrClosed
		}
		if s := c.sess; s != nil {
			c.mu.Unlock()
			return s, nil
		}
		wait := c.connecting
		if wait == nil {
			wait = make(chan struct{})
			c.connecting = wait
			c.wg.Go(func() { c.connect(wait) })
		}
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		c.mu.Lock()
		s, err := c.sess, c.connErr
		c.mu.Unlock()
		if s != nil {
			return s, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func (c *Client) connect(done chan struct{}) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.CallTimeout)
	defer cancel()
	s, err := c.dial(ctx)
	c.mu.Lock()
	c.connecting = nil
	if err != nil {
		c.connErr = fmt.Errorf("%w: registry %s: %w", resolve.ErrUnavailable, c.addr, limitFromClose(err))
	} else if c.closed {
		s.qc.CloseWithError(0, "client closing")
	} else {
		c.sess, c.connErr = s, nil
		c.wg.Go(s.read)
		c.wg.Go(func() {
			if err := s.w.RunFlusher(s.done); err != nil {
				s.fail(err)
			}
		})
	}
	c.mu.Unlock()
	close(done)
	c.poke()
}

func (c *Client) dial(ctx context.Context) (*regSession, error) {
	raddr, err := net.ResolveUDPAddr("udp", c.addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	tr := c.tr
	if tr == nil {
		var laddr *net.UDPAddr
		if c.cfg.LocalAddr != "" {
			if laddr, err = net.ResolveUDPAddr("udp", c.cfg.LocalAddr); err != nil {
				c.mu.Unlock()
				return nil, err
			}
		}
		pc, err := net.ListenUDP("udp", laddr)
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		tr = &quic.Transport{Conn: pc}
		c.tr = tr
	}
	c.mu.Unlock()
	qc, err := tr.Dial(ctx, raddr, registryClientTLS(c.cfg.Key), c.quicConfig())
	if err != nil {
		return nil, err
	}
	state := qc.ConnectionState().TLS
	ekm, err := state.ExportKeyingMaterial(exporterLabel, nil, 32)
	if err != nil {
		qc.CloseWithError(codeRegistryProto, "no exporter")
		return nil, err
	}
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		qc.CloseWithError(codeRegistryProto, "no stream")
		return nil, err
	}
	return &regSession{
		c: c, qc: qc, str: str, ekm: ekm, w: regwire.NewWriter(deadlineWriter{str}),
		pending: make(map[uint64]chan *regwire.Frame),
		watches: make(map[uint64]*registryWatch),
		done:    make(chan struct{}),
	}, nil
}

func (c *Client) quicConfig() *quic.Config {
	var qc *quic.Config
	if c.cfg.QUIC != nil {
		qc = c.cfg.QUIC.Clone()
	} else {
		// Keep-alives well inside the idle timeout make a dead registry
		// show up as a closed connection within a lease, even with no
		// renewal due.
		qc = &quic.Config{
			MaxIdleTimeout:        6 * time.Second,
			KeepAlivePeriod:       2 * time.Second,
			MaxIncomingStreams:    -1,
			MaxIncomingUniStreams: -1,
		}
	}
	if qc.TokenStore == nil {
		qc.TokenStore = registryTokens{addr: c.addr}
	}
	return qc
}

// tokenStore keeps the address-validation tokens that registries hand out
// (NEW_TOKEN), by registry address, for every Client in the
// process. A client that reconnects, or a new one to a registry that the
// process reached before, presents one and skips the Retry that a
// registry under a flood of Initials asks of every unknown client; a
// Retry costs a round trip, and under a flood the registry's queue of
// Retries to send (8 in quic-go) drops Initials, which the client then
// resends only after its first timeout.
var tokenStore = quic.NewLRUTokenStore(256, 4)

// registryTokens is tokenStore as one registry's client sees it: quic-go
// files tokens under the TLS server name, which every registry shares.
type registryTokens struct{ addr string }

func (t registryTokens) Put(_ string, token *quic.ClientToken) { tokenStore.Put(t.addr, token) }
func (t registryTokens) Pop(string) *quic.ClientToken          { return tokenStore.Pop(t.addr) }

func (c *Client) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// supervise keeps the client connected while it has state to keep, and
// renews leases; it ends at Close.
func (c *Client) supervise() {
	backoff := 50 * time.Millisecond
	var restored *regSession // the session whose state was last restored
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.kick:
		case <-tick.C:
		}
		c.mu.Lock()
		need := len(c.regs)+len(c.watches) > 0
		s := c.sess
		c.mu.Unlock()
		if s == nil {
			if !need {
				continue
			}
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.CallTimeout)
			_, err := c.session(ctx)
			cancel()
			if err != nil {
				c.cfg.Logger.Debug("registry: reconnect failed", "addr", c.addr, "err", err, "backoff", backoff)
				select {
				case <-c.ctx.Done():
					return
				case <-time.After(backoff + rand.N(backoff/2)):
				}
				backoff = min(2*backoff, 2*time.Second)
				c.poke()
				continue
			}
			backoff = 50 * time.Millisecond
			continue // the connect poked us
		}
		if s != restored {
			restored = s
			c.restore(s)
		}
		c.renewDue(s)
	}
}

// restore re-opens every watch on a new session; leases are renewed or
// re-registered by renewDue, which treats every lease as due.
func (c *Client) restore(s *regSession) {
	c.mu.Lock()
	watches := make([]*registryWatch, 0, len(c.watches))
	for w := range c.watches {
		watches = append(watches, w)
	}
	for r := range c.regs {
		r.renewAt = time.Time{}
	}
	c.mu.Unlock()
	for _, w := range watches {
		if err := s.rewatch(w); err != nil {
			return // the session died; the next one restores again
		}
	}
}

func (c *Client) renewDue(s *regSession) {
	now := time.Now()
	c.mu.Lock()
	var due []*registryReg
	for r := range c.regs {
		if r.renewAt.Before(now) {
			due = append(due, r)
		}
	}
	c.mu.Unlock()
	for _, r := range due {
		if err := r.refresh(s); err != nil {
			c.cfg.Logger.Warn("registry: renewal failed", "service", r.service, "err", err)
			if s.dead() {
				return
			}
		}
	}
}

// parseCode maps an Error answer to the resolve package's errors. The
// answer's message repeats the code's own text ("resolve: not found"),
// which the error says already: only what it adds is kept.
func parseCode(f *regwire.Frame) error {
	var base error
	switch f.Code {
	case regwire.CodeNotFound:
		base = resolve.ErrNotFound
	case regwire.CodeAllDown:
		base = resolve.ErrAllDown
	case regwire.CodeInvalid:
		base = resolve.ErrInvalid
	case regwire.CodeUnauthenticated:
		base = resolve.ErrUnsigned
	case regwire.CodeNotOwner:
		base = resolve.ErrNotOwner
	case regwire.CodeLimit:
		le, ok := parseLimitReason(f.Message)
		if !ok { // a registry older than LimitError: its own words
			msg := strings.TrimPrefix(f.Message, "resolve: ")
			le = &resolve.LimitError{Limit: resolve.Limit(strings.TrimPrefix(msg, "registry limit reached: "))}
		}
		return le
	case regwire.CodeUnknownLease:
		base = errUnknownLease
	default:
		base = resolve.ErrUnavailable
	}
	msg := strings.TrimPrefix(f.Message, "resolve: ")
	name := strings.TrimPrefix(base.Error(), "resolve: ")
	switch {
	case msg == "" || msg == name:
		return base
	case strings.HasPrefix(msg, name+": "):
		return fmt.Errorf("%w: %s", base, msg[len(name)+2:])
	}
	return fmt.Errorf("%w (registry: %s)", base, msg)
}
