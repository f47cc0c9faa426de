package registry

import (
	"container/list"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/healthhook"
	"github.com/roamnet/roam/resolve/internal/regwire"
	"github.com/roamnet/roam/resolve/internal/shrink"
)

// Config configures a Server. The zero value is ready to use.
type Config struct {
	// Key is the registry's identity, which clients pin with ?key= in the
	// registry:// URL. If nil, a fresh Ed25519 key is made, and clients that
	// pinned the old one will refuse a restarted registry. With a fixed
	// Ed25519 key a restarted registry also answers its old connections
	// with stateless resets, so that clients notice the restart at once.
	Key crypto.Signer
	// LeaseTTL is how long a registration lives without renewal. Clients
	// renew at a third of it. If zero, 15s.
	LeaseTTL time.Duration
	// AnswerTTL is the TTL the registry puts on the endpoints it hands out:
	// how long a client that does not watch may cache them. If zero, 5s.
	AnswerTTL time.Duration
	// BindingTTL is how long a name stays bound to its key after its last
	// registration ends, so that a provider that restarts keeps its name
	// and nobody can take it meanwhile. If zero, 24h.
	BindingTTL time.Duration
	// Prober, when set, probes every registered endpoint (a sal.Host is a
	// resolve.Prober), and answers and watches leave out endpoints that fail
	// repeatedly, long before their lease runs out; a service whose
	// endpoints all fail resolves to resolve.ErrAllDown (unless
	// Health.AnswerWhenAllDown). Health configures it.
	Prober resolve.Prober
	Health resolve.HealthConfig
	// Limits on what clients may make the registry hold, so that no peer,
	// and no flood, can stall it or exhaust its memory. What would go over
	// one is refused with a *resolve.LimitError (errors.Is(err,
	// resolve.ErrLimit)) at the client and counted in Stats.Limits. The
	// defaults hold on a 2-core machine under the floods measured in the
	// README ("Limits and abuse"); raise them for a larger fleet. "One
	// address" is an IPv4 address or an IPv6 /64.
	//
	// MaxConns bounds the client connections (if zero, 4096) and
	// MaxConnsPerAddr those from one address, counting the handshakes of an
	// address a QUIC Retry proved (if zero, 32). An address at its limit
	// must prove itself with a Retry, and is then refused before its
	// handshake (CONNECTION_REFUSED, which a client reads as
	// LimitHandshakes); a connection over either limit that got through is
	// closed at once.
	MaxConns, MaxConnsPerAddr int
	// MaxHandshakes bounds the QUIC handshakes in progress (if zero, 512).
	// Once RetryThreshold are in progress (if zero, 32; if negative,
	// always) a new client must first prove its address with a QUIC Retry,
	// one round trip, so that spoofed Initials cost no state.
	MaxHandshakes, RetryThreshold int
	// MaxLeases bounds the registrations in all (if zero, 32768),
	// MaxLeasesPerKey those whose endpoints pin one key (if zero, 256),
	// MaxLeasesPerConn those made over one connection (if zero, 256), and
	// MaxEndpoints the endpoints of one service (if zero, 64). With the
	// defaults one address holds at most a quarter of MaxLeases.
	MaxLeases, MaxLeasesPerKey, MaxLeasesPerConn, MaxEndpoints int
	// MaxWatches bounds the watches open in all (if zero, 32768) and
	// MaxWatchesPerConn those on one connection (if zero, 256).
	MaxWatches, MaxWatchesPerConn int
	// MaxHeldNames bounds the names kept bound to their key after their
	// last lease ended (see BindingTTL; if zero, 16384). Past it, the name
	// released longest ago lapses at once. Self-certifying IDs are bound
	// by their name and are never held.
	MaxHeldNames int
	// QUIC configures the QUIC layer; nil gives roam's defaults.
	QUIC *quic.Config
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// orDefault returns d, or def if d is zero or negative.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (c *Config) fill() {
	c.LeaseTTL = orDefault(c.LeaseTTL, 15*time.Second)
	c.AnswerTTL = orDefault(c.AnswerTTL, 5*time.Second)
	c.BindingTTL = orDefault(c.BindingTTL, 24*time.Hour)
	orInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	orInt(&c.MaxConns, 4096)
	orInt(&c.MaxConnsPerAddr, 32)
	orInt(&c.MaxHandshakes, 512)
	if c.RetryThreshold == 0 {
		c.RetryThreshold = 32
	}
	orInt(&c.MaxLeases, 32768)
	orInt(&c.MaxLeasesPerKey, 256)
	orInt(&c.MaxLeasesPerConn, 256)
	orInt(&c.MaxEndpoints, 64)
	orInt(&c.MaxWatches, 32768)
	orInt(&c.MaxWatchesPerConn, 256)
	orInt(&c.MaxHeldNames, 16384)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server is roam's embedded registry: the zero-setup resolver for a
// laptop, a lab or a small fleet. Providers register endpoints under
// leases that they renew; clients look services up and watch them over
// QUIC (one connection per client, TLS 1.3, the registry's key pinned by
// the client), and get changes pushed the moment they happen.
//
// Only the holder of a service's key may register it: each registration
// carries a signature by the key the endpoint pins, bound to the client's
// TLS session. A self-certifying ID ("rk--<fp>.name") is bound to its own
// key; any other name to the key of its first registration, for as long
// as it has registrations and BindingTTL after. State lives in memory: a
// restarted registry is rebuilt by its providers' renewals within a lease.
//
// A Server is also a resolve.Resolver and a resolve.Watcher for code in
// its own process. Use Client (or resolve.Open with a registry:// URL)
// elsewhere.
type Server struct {
	cfg  Config
	cert tls.Certificate
	fp   resolve.Fingerprint
	mem  *resolve.Memory
	view registryView // mem, or a Health over it

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the registry starts

	// Lock order: mu, then resolve.Memory's, then resolve.Health's, then a
	// connection's and its pushers', then peers.mu and registrar.mu
	// (limits.go).
	mu        sync.Mutex
	leases    map[uint64]*lease
	byAddr    map[leaseKey]*lease
	byKey     map[resolve.Fingerprint]int // live leases whose endpoint pins the key
	owners    map[string]*binding
	held      list.List   // names with no lease left, bound until their binding lapses, oldest first
	pruneAt   *time.Timer // lapses the front of held
	expiries  list.List   // the leases, the one to expire first in front
	expireAt  *time.Timer // expires the front of expiries
	conns     map[*registryConn]struct{}
	servers   []*quic.Transport
	closed    bool
	counters  registryCounters
	limits    limitCounters
	peers     peerLimits
	watches   atomic.Int64 // open, on every connection
	registrar registrants
	peaks     struct{ leases, byAddr, byKey, owners, conns int } // for shrink.Delete
}

// registryView is what lookups and watches are answered from.
type registryView interface {
	resolve.Resolver
	resolve.Watcher
	resolve.FuncWatcher
}

type leaseKey struct {
	service string
	addr    netip.AddrPort
}

type lease struct {
	id      uint64
	key     leaseKey
	fp      resolve.Fingerprint  // the key its endpoint pins
	reg     resolve.Registration // in r.mem
	expires time.Time
	inLine  *list.Element // in Server.expiries
	owner   *registryConn // counts against its MaxLeasesPerConn while it lives
}

type binding struct {
	key    resolve.Fingerprint
	leases int
	until  time.Time     // when leases is 0: the binding lapses then
	held   *list.Element // in Server.held while leases is 0
}

type registryCounters struct {
	lookups, registrations, renewals, refused, expired atomic.Uint64
}

// Stats is a snapshot of a Server's state and counters.
type Stats struct {
	Services, Leases, Conns int
	// Handshakes counts the QUIC handshakes in progress, Watches the
	// watches open, Names the names bound to a key (HeldNames of them
	// with no lease left).
	Handshakes, Watches, Names, HeldNames int
	Lookups, Registrations, Refused       uint64 // since start
	Renewals, Expired                     uint64
	// Limits counts what was refused to keep the limits.
	Limits LimitStats
}

// New returns a Server that serves nothing yet: call Serve, or
// use Listen.
func New(cfg Config) (*Server, error) {
	cfg.fill()
	cert, fp, err := selfSigned(cfg.Key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Server{
		cfg: cfg, cert: cert, fp: fp, mem: resolve.NewMemory(),
		ctx: ctx, cancel: cancel,
		leases: make(map[uint64]*lease),
		byAddr: make(map[leaseKey]*lease),
		byKey:  make(map[resolve.Fingerprint]int),
		owners: make(map[string]*binding),
		conns:  make(map[*registryConn]struct{}),
	}
	r.peers.conns = make(map[netip.Addr]int)
	r.peers.proven = make(map[netip.Addr]int)
	r.registrar.from = make(map[leaseKey]netip.Addr)
	r.view = r.mem
	if cfg.Prober != nil {
		h := resolve.NewHealth(r.mem, cfg.Prober, cfg.Health)
		// Probes are charged to whoever registered the endpoint, so that
		// one peer's registrations at dead addresses, under as many keys
		// as it likes, wait for each other and not for everyone else's.
		healthhook.ChargeTo(h, r.registrar.lookup)
		r.view = h
	}
	return r, nil
}

// Listen listens on a UDP address ("127.0.0.1:7700", ":0") and
// serves a new Server there until Close.
func Listen(addr string, cfg Config) (*Server, error) {
	r, err := New(cfg)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("resolve: registry: %w", err)
	}
	if err := r.listen(pc); err != nil {
		pc.Close()
		r.Close()
		return nil, err
	}
	return r, nil
}

// Serve serves the registry on pc until Close, which also closes pc.
func (r *Server) Serve(pc net.PacketConn) error {
	if err := r.listen(pc); err != nil {
		return err
	}
	<-r.ctx.Done()
	return resolve.ErrClosed
}

func (r *Server) listen(pc net.PacketConn) error {
	tr := &quic.Transport{
		Conn:                pc,
		StatelessResetKey:   resetKey(r.cfg.Key),
		ConnContext:         r.connContext,
		VerifySourceAddress: r.verifySourceAddress,
	}
	ln, err := tr.Listen(registryServerTLS(r.cert), r.quicConfig())
	if err != nil {
		return fmt.Errorf("resolve: registry: %w", err)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		ln.Close()
		tr.Close()
		return &resolve.Error{Op: "serve", Err: resolve.ErrClosed}
	}
	r.servers = append(r.servers, tr)
	r.wg.Add(1)
	r.mu.Unlock()
	go r.accept(ln)
	return nil
}

func (r *Server) quicConfig() *quic.Config {
	if r.cfg.QUIC != nil {
		return r.cfg.QUIC.Clone()
	}
	return &quic.Config{
		MaxIdleTimeout:        20 * time.Second,
		MaxIncomingStreams:    8,
		MaxIncomingUniStreams: -1,
	}
}

// resetKey derives a stable stateless-reset key from a deterministic
// signature, which only an Ed25519 key gives; otherwise quic-go picks one.
func resetKey(key crypto.Signer) *quic.StatelessResetKey {
	k, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil
	}
	sum := sha256.Sum256(ed25519.Sign(k, []byte("roam registry stateless reset key")))
	v := quic.StatelessResetKey(sum)
	return &v
}

// Addr returns the first address the registry serves on, or nil.
func (r *Server) Addr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.servers) == 0 {
		return nil
	}
	return r.servers[0].Conn.LocalAddr()
}

// Key returns the fingerprint of the registry's key, which clients pin.
func (r *Server) Key() resolve.Fingerprint { return r.fp }

// URL returns the registry:// URL that reaches this registry with its key
// pinned, for resolve.Open and ROAM_RESOLVER. An unspecified listening
// address is given as loopback.
func (r *Server) URL() string {
	a, _ := r.Addr().(*net.UDPAddr)
	if a == nil {
		return ""
	}
	ap := a.AddrPort()
	if ip := ap.Addr().Unmap(); ip.IsUnspecified() {
		if ip.Is4() {
			ap = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port())
		} else {
			ap = netip.AddrPortFrom(netip.IPv6Loopback(), ap.Port())
		}
	}
	return "registry://" + ap.String() + "?key=" + r.fp.String()
}

// Resolve answers from the registry's own state (leaving out endpoints
// that fail their health probes).
func (r *Server) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	r.counters.lookups.Add(1)
	return r.view.Resolve(ctx, service)
}

// Watch watches the registry's own state.
func (r *Server) Watch(ctx context.Context, service string) (<-chan []resolve.Endpoint, error) {
	return r.view.Watch(ctx, service)
}

// Stats returns a snapshot of the registry's state and counters.
func (r *Server) Stats() Stats {
	r.mu.Lock()
	s := Stats{
		Leases: len(r.leases), Conns: len(r.conns),
		Names: len(r.owners), HeldNames: r.held.Len(),
	}
	s.Services = s.Names - s.HeldNames // each name with a lease is a service
	r.mu.Unlock()
	s.Handshakes = int(r.peers.handshakes.Load())
	s.Watches = int(r.watches.Load())
	s.Limits = r.limits.stats()
	s.Lookups = r.counters.lookups.Load()
	s.Registrations = r.counters.registrations.Load()
	s.Refused = r.counters.refused.Load()
	s.Renewals = r.counters.renewals.Load()
	s.Expired = r.counters.expired.Load()
	return s
}

// Close stops serving, closes every client connection (clients then
// reconnect, to a restarted registry if there is one) and drops all state.
func (r *Server) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	for _, t := range []*time.Timer{r.pruneAt, r.expireAt} {
		if t != nil {
			t.Stop()
		}
	}
	conns := make([]*registryConn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	servers := r.servers
	r.mu.Unlock()

	r.cancel()
	for _, c := range conns {
		c.qc.CloseWithError(codeRegistryClosing, "registry closing")
	}
	for _, tr := range servers {
		tr.Close()
		tr.Conn.Close()
	}
	r.wg.Wait()
	if h, ok := r.view.(*resolve.Health); ok {
		h.Close()
	}
	return r.mem.Close()
}

// QUIC application error codes of the registry protocol.
const (
	codeRegistryClosing quic.ApplicationErrorCode = 1
	codeRegistryProto   quic.ApplicationErrorCode = 2
	codeRegistryLimit   quic.ApplicationErrorCode = 3 // the reason is limitReason's text
)

func (r *Server) accept(ln *quic.Listener) {
	defer r.wg.Done()
	for {
		qc, err := ln.Accept(r.ctx)
		if err != nil {
			return
		}
		handshaken(qc)
		scope := udpAddrScope(qc.RemoteAddr())
		c := &registryConn{r: r, qc: qc, scope: scope, watches: make(map[uint64]func())}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			qc.CloseWithError(codeRegistryClosing, "registry closing")
			return
		}
		if le := r.admitConnLocked(scope); le != nil {
			r.mu.Unlock()
			r.limits.count(le)
			r.cfg.Logger.Debug("registry: connection refused", "remote", qc.RemoteAddr(), "err", le)
			qc.CloseWithError(codeRegistryLimit, limitReason(le))
			continue
		}
		r.conns[c] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go c.serve()
	}
}

// refuse answers a request that would go over a limit, and counts it.
func (r *Server) refuse(id uint64, e *resolve.LimitError) *regwire.Frame {
	r.limits.count(e)
	return errorFrame(id, regwire.CodeLimit, limitReason(e))
}

// registrants remembers who registered each lease, for resolve.Health to
// charge its probes to. Its lock comes after resolve.Health's, which holds
// it while it looks.
type registrants struct {
	mu   sync.Mutex
	from map[leaseKey]netip.Addr
	peak int // for shrink.Delete
}

func (g *registrants) set(k leaseKey, scope netip.Addr) {
	g.mu.Lock()
	g.from[k] = scope
	g.mu.Unlock()
}

func (g *registrants) forget(k leaseKey) {
	g.mu.Lock()
	shrink.Delete(&g.from, k, &g.peak)
	g.mu.Unlock()
}

func (g *registrants) lookup(service string, addr netip.AddrPort) (netip.Addr, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	a, ok := g.from[leaseKey{service, addr}]
	return a, ok
}
