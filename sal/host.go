package sal

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
)

// QUIC error codes roam uses when it closes a connection or a stream.
const (
	codeNoError    quic.ApplicationErrorCode = 0x0
	codeHostClosed quic.ApplicationErrorCode = 0x1 // the Host is shutting down
	codeIdle       quic.ApplicationErrorCode = 0x2 // no flow used the connection for IdleConnTimeout
	codeMoved      quic.ApplicationErrorCode = 0x3 // the Host moved to another address: resume elsewhere
	codeLimit      quic.ApplicationErrorCode = 0x4 // the peer went over a limit (see limitReason)

	streamClosed   quic.StreamErrorCode = 0x10 // Close: the reader is gone
	streamRejected quic.StreamErrorCode = 0x11 // the flow was refused
	streamProtocol quic.StreamErrorCode = 0x12 // the SAL header was malformed
	streamMoved    quic.StreamErrorCode = 0x13 // the flow moved to another stream
	streamLost     quic.StreamErrorCode = 0x14 // the flow is over for good (its Host closed, or it was lost)
	streamStalled  quic.StreamErrorCode = 0x15 // the peer stopped acknowledging (see Config.StallTimeout)
)

// A Host is one end of roam: it dials services and listens on them. It owns
// one UDP socket (one quic.Transport), a TLS 1.3 identity, a service table
// and a resolver. Flows to the same peer share one QUIC connection, one
// stream per flow; the connection opens on first use and closes after
// Config.IdleConnTimeout without flows.
//
// A Host is safe for concurrent use.
type Host struct {
	cfg      Config
	log      *slog.Logger
	id       *identity
	selfID   ServiceID // rk--<fingerprint>: how this Host names itself as a dialer
	quicConf *quic.Config
	// listenConf is quicConf for connections peers dial (see listenQUICConfig).
	listenConf *quic.Config
	listen     func(ctx context.Context, network, address string) (net.PacketConn, error)
	resolver   resolve.Resolver // Config.Resolver if it keeps answers (a resolve.Invalidator), else a Cache in front of it
	ownCache   *resolve.Cache   // closed with the Host when the Host made it
	opened     io.Closer        // the resolver the Host opened from ROAM_RESOLVER, closed with it
	table      ServiceTable

	ctx    context.Context // ends when the Host closes
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	peers     map[netip.AddrPort]*peer // connections this Host dialed
	inbound   map[*quic.Conn]struct{}  // connections peers dialed
	listeners map[string]*Listener     // by ServiceID.LookupName
	qln       *quic.Listener           // started by the first Listen
	cur       *transport               // the socket the Host uses now
	advertise netip.AddrPort           // registered instead of cur.local when valid
	retired   []*transport             // earlier sockets that migrated connections still need
	paths     []*path                  // further local paths, in the order added (see paths.go)
	pathPeers map[pathPeer]*peer       // connections this Host dialed on further paths
	pathRetry map[pathPeer]pathRetry   // when a path's failed dial may be tried again
	// primaryClosed counts the bytes of closed connections on ListenAddr's path.
	primaryClosed byteCounter
	rebinding     sync.Mutex            // serializes Rebind
	spread        map[string]uint32     // per-service round-robin position
	flows         map[flowKey]*Conn     // live flows, for acks and resumes
	flowsPeak     int                   // the most flows had since flows was made
	following     map[string]*following // services whose dialer flows follow the resolver

	budget *budget // bytes all flows keep for replay
	limits limiter // what peers hold, against the Config's limits

	acctMu    sync.Mutex
	acct      map[string]*serviceCounters // by canonical service ID
	statsName string                      // the Host's entry in the "roam" expvar.Map
}

// NewHost opens the Host's socket and returns it ready to dial and listen.
// With no Config.Resolver, it opens the resolver that the environment
// variable ROAM_RESOLVER names (see Config.Resolver).
func NewHost(cfg Config) (h *Host, err error) {
	var opened io.Closer // a resolver this Host opened and must close
	if cfg.Resolver == nil {
		r, openErr := openEnvResolver()
		if openErr != nil {
			return nil, openErr
		}
		cfg.Resolver = r // our copy: the caller's Config is left alone
		if c, ok := r.(io.Closer); ok {
			opened = c
			defer func() {
				if err != nil {
					c.Close()
				}
			}()
		}
	}
	id, err := newIdentity(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("sal: identity: %w", err)
	}
	selfID, err := NewServiceID("", id.fp)
	if err != nil {
		return nil, err
	}
	open := cfg.ListenPacket
	if open == nil {
		var lc net.ListenConfig
		open = lc.ListenPacket
	}
	listen := func(ctx context.Context, network, address string) (net.PacketConn, error) {
		pc, err := open(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return wrapSocket(pc), nil
	}
	pconn, err := listen(context.Background(), "udp", cfg.listenAddr())
	if err != nil {
		return nil, &OpError{Op: "listen", Err: err}
	}
	local, err := addrPortOf(pconn.LocalAddr())
	if err != nil {
		pconn.Close()
		return nil, err
	}
	h = &Host{
		cfg:        cfg,
		log:        cfg.logger(),
		id:         id,
		selfID:     selfID,
		listen:     listen,
		advertise:  cfg.AdvertiseAddr,
		quicConf:   cfg.quicConfig(),
		listenConf: cfg.listenQUICConfig(),
		peers:      make(map[netip.AddrPort]*peer),
		pathPeers:  make(map[pathPeer]*peer),
		pathRetry:  make(map[pathPeer]pathRetry),
		inbound:    make(map[*quic.Conn]struct{}),
		listeners:  make(map[string]*Listener),
		spread:     make(map[string]uint32),
		flows:      make(map[flowKey]*Conn),
		following:  make(map[string]*following),
		budget:     newBudget(cfg.hostBuffer(), cfg.connBuffer()),
		acct:       make(map[string]*serviceCounters),
		opened:     opened,
	}
	if _, caches := cfg.Resolver.(resolve.Invalidator); caches {
		h.resolver = cfg.Resolver // it keeps answers already: no second cache
	} else {
		h.ownCache = resolve.NewCache(cfg.Resolver, cfg.Cache)
		h.resolver = h.ownCache
	}
	h.cur = &transport{tr: h.newQUICTransport(pconn), pc: pconn, local: local}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	for _, a := range cfg.Paths {
		if err := h.AddPath(h.ctx, a); err != nil {
			h.opened = nil // closed by the deferred call
			h.Close()
			return nil, err
		}
	}
	if cfg.Monitor != nil {
		h.wg.Go(func() { h.followAddresses(cfg.Monitor) })
	}
	h.statsName = h.publishStats()
	h.log.Debug("host started", "addr", local, "key", id.fp)
	return h, nil
}

// LocalAddr returns the address of the Host's UDP socket.
func (h *Host) LocalAddr() netip.AddrPort {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur.local
}

// Key returns the fingerprint of the Host's public key: the key that its
// services prove they hold.
func (h *Host) Key() resolve.Fingerprint { return h.id.fp }

// ServiceID returns the self-certifying ID of a service this Host serves:
// name with the Host's key, so dialers can check the peer whatever a
// resolver says.
func (h *Host) ServiceID(name string) (ServiceID, error) { return NewServiceID(name, h.id.fp) }

// Table returns the Host's service table, which decides for each dial
// whether to resolve, use fixed endpoints, or drop.
func (h *Host) Table() *ServiceTable { return &h.table }

// Resolver returns the resolver the Host dials through (the cache in front
// of Config.Resolver).
func (h *Host) Resolver() resolve.Resolver { return h.resolver }

// spawn runs f on a goroutine that Close waits for, and reports whether
// it did: once the Host is closed it does not. Host.mu must not be held
// (see spawnLocked); the lock makes the Add safe against Close's Wait.
func (h *Host) spawn(f func()) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.spawnLocked(f)
}

// spawnLocked is spawn with Host.mu held.
func (h *Host) spawnLocked(f func()) bool {
	if h.closed {
		return false
	}
	h.wg.Go(f)
	return true
}

// Close closes every listener, flow and connection of the Host and its
// socket. Peers see their flows end with an error.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.unpublishStats()
	listeners := make([]*Listener, 0, len(h.listeners))
	for _, l := range h.listeners {
		listeners = append(listeners, l)
	}
	var conns []*quic.Conn
	for _, p := range h.peers {
		if p.sess != nil {
			conns = append(conns, p.sess.qc)
		}
	}
	for _, p := range h.pathPeers {
		if p.sess != nil {
			conns = append(conns, p.sess.qc)
		}
	}
	h.peers, h.pathPeers = nil, nil
	inbound := h.inbound
	h.inbound = nil
	qln := h.qln
	transports := append([]*transport{h.cur}, h.retired...)
	for _, pt := range h.paths {
		transports = append(transports, pt.t)
	}
	h.retired, h.paths = nil, nil
	flows := make([]*Conn, 0, len(h.flows))
	for _, c := range h.flows {
		flows = append(flows, c)
	}
	h.mu.Unlock()

	var errs []error
	for _, c := range flows {
		c.lose(net.ErrClosed)
	}
	for _, l := range listeners {
		errs = append(errs, l.Close())
	}
	h.cancel()
	if qln != nil {
		errs = append(errs, qln.Close())
	}
	for _, c := range conns {
		c.CloseWithError(codeHostClosed, "host closed")
	}
	for c := range inbound {
		c.CloseWithError(codeHostClosed, "host closed")
	}
	for _, t := range transports {
		errs = append(errs, t.close())
	}
	if h.ownCache != nil {
		errs = append(errs, h.ownCache.Close())
	}
	h.wg.Wait()
	if h.opened != nil {
		// Last: closing a registry client withdraws what it registered,
		// which the listeners above have done already.
		errs = append(errs, h.opened.Close())
	}
	return errors.Join(errs...)
}

func (h *Host) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// lookup applies the service table: the endpoints of id, in the order
// its rule or resolver gives.
func (h *Host) lookup(ctx context.Context, id ServiceID) ([]resolve.Endpoint, error) {
	rule, _ := h.table.Lookup(id)
	switch rule.Action {
	case ActionDrop:
		return nil, ErrDropped
	case ActionEndpoints:
		return rule.Endpoints, nil
	}
	eps, err := h.resolver.Resolve(ctx, id.LookupName())
	if err != nil {
		if ctx.Err() != nil {
			return nil, contextErr(ctx)
		}
		return nil, err
	}
	if len(eps) == 0 {
		return nil, resolve.ErrNotFound
	}
	return eps, nil
}

// endpoints is lookup, rotated so that successive dials start at
// successive endpoints.
func (h *Host) endpoints(ctx context.Context, id ServiceID) ([]resolve.Endpoint, error) {
	eps, err := h.lookup(ctx, id)
	if err != nil || len(eps) == 1 {
		return eps, err
	}
	name := id.LookupName()
	h.mu.Lock()
	if len(h.spread) > 4096 { // bound the memory of services dialed once
		clear(h.spread)
	}
	start := int(h.spread[name] % uint32(len(eps)))
	h.spread[name]++
	h.mu.Unlock()
	ordered := make([]resolve.Endpoint, 0, len(eps))
	ordered = append(ordered, eps[start:]...)
	return append(ordered, eps[:start]...), nil
}

// flow returns the live flow with key k, or nil.
func (h *Host) flow(k flowKey) *Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.flows[k]
}

// addFlow registers c; it reports false if the key is taken or the Host
// closed.
func (h *Host) addFlow(c *Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.flows[c.key()] != nil {
		return false
	}
	h.flows[c.key()] = c
	return true
}

func (h *Host) forgetFlow(c *Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.flows[c.key()] == c {
		delete(h.flows, c.key())
	}
	h.flowsPeak = max(h.flowsPeak, len(h.flows)+1)
	if len(h.flows) == 0 && h.flowsPeak > 1024 {
		// A map never shrinks: after a peer opened thousands of flows,
		// let the grown one go.
		h.flows, h.flowsPeak = make(map[flowKey]*Conn), 0
	}
}

// newFlowKey picks an unused dialer flow ID.
func (h *Host) newFlowID() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		id := newFlowID()
		if id != 0 && h.flows[flowKey{id: id}] == nil {
			return id
		}
	}
}

// dialable maps an unspecified IP to loopback: like net.Dial, an
// endpoint of 0.0.0.0 or :: means this machine.
func dialable(ap netip.AddrPort) netip.AddrPort {
	if !ap.Addr().IsUnspecified() {
		return ap
	}
	if ap.Addr().Is4() {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ap.Port())
	}
	return netip.AddrPortFrom(netip.IPv6Loopback(), ap.Port())
}

func addrPortOf(a net.Addr) (netip.AddrPort, error) {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("sal: socket address %q is not ip:port: %w", a, err)
	}
	return ap, nil
}

// openEnvTimeout bounds opening the resolver ROAM_RESOLVER names, which may
// dial a registry or etcd: NewHost has no context to take a bound from.
const openEnvTimeout = 10 * time.Second

// openEnvResolver opens the resolver ROAM_RESOLVER names; without one, it
// returns ErrNoResolver.
func openEnvResolver() (resolve.Resolver, error) {
	url := os.Getenv(resolve.EnvResolver)
	if url == "" {
		return nil, ErrNoResolver
	}
	ctx, cancel := context.WithTimeout(context.Background(), openEnvTimeout)
	defer cancel()
	r, err := resolve.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("sal: %s: %w", resolve.EnvResolver, err)
	}
	return r, nil
}

// contextErr returns why ctx ended. context.DeadlineExceeded reports
// Timeout() == true, so an OpError wrapping it does too.
func contextErr(ctx context.Context) error { return context.Cause(ctx) }

func newFlowID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return binary.BigEndian.Uint64(b[:])
}
