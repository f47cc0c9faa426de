package etcd

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/roamnet/roam/resolve"
)

// Config configures the etcd backend. The zero value of every field but
// Endpoints works, and New never modifies the Config it is given.
type Config struct {
	// Endpoints are the cluster members' client addresses, "host:port" or
	// "http://host:port". Required unless Client is set.
	Endpoints []string
	// Prefix is the key prefix under which everything lives; Resolvers and
	// Hosts meet only under the same prefix, and proofs are bound to it. A
	// missing trailing "/" is added. If empty, "/roam/".
	Prefix string
	// LeaseTTL is how long a registration outlives a Host that dies without
	// closing it, and how long etcd may be out of reach before a
	// registration must be made again. etcd counts leases in whole seconds
	// and sets a floor of its own. If zero, 10s.
	LeaseTTL time.Duration
	// DialTimeout bounds New's first contact with the cluster, each
	// withdrawal on Close, and each attempt to renew a lost registration.
	// If zero, 5s.
	DialTimeout time.Duration
	// StaleReads lets Resolve and Watch read from whichever member the
	// client talks to (etcd's serializable reads) instead of through the
	// leader: faster, and answering while the cluster has lost its quorum,
	// but possibly a moment behind.
	StaleReads bool
	// Client, if set, is used instead of dialling Endpoints, for TLS or
	// etcd authentication; Close then leaves it open.
	Client *clientv3.Client
	// Logger receives diagnostics, the etcd client's among them. If nil,
	// nothing is logged.
	Logger *slog.Logger
}

// Backend is a Resolver, SignedRegistrar and Watcher backed by an etcd
// cluster: the backend for fleets of Hosts on many machines. It is safe
// for concurrent use.
//
// Each registration is one key under a lease that the Backend keeps alive, so
// a Host that dies is withdrawn when its lease expires (Config.LeaseTTL)
// and a closed Registration at once. Keys live under the prefix:
//
//	<prefix>svc/<service>/owner       the fingerprint the service is bound to
//	<prefix>svc/<service>/ep/<addr>   a record: the endpoint and its Proof
//
// where <service> is the case-folded ID, path-escaped. One prefix watch thus
// sees a service's owner and its endpoints. Records are signed by the
// service's key (domain "roam etcd v1", bound to the prefix), and Resolve
// and Watch drop any record whose proof fails or whose key is not the
// service's, so that whoever can write to etcd still cannot redirect a
// self-certifying service, nor alter the address of another's record. The
// owner key of a plain name is trust on first registration, and only
// etcd's own access control guards it.
//
// As in Memory, a service has one endpoint per address: registering an
// address again replaces the record, and closing the older Registration
// then leaves the newer one in place.
//
// If etcd is out of reach for longer than the lease, a registration is
// made again (new lease, same record) once it is back, unless a newer
// registration of the address has taken its place meanwhile.
type Backend struct {
	cli     *clientv3.Client
	own     bool // New dialled cli, so Close closes it
	prefix  string
	binding []byte
	ttl     int64 // lease TTL in seconds
	timeout time.Duration
	read    []clientv3.OpOption // options of every read
	log     *slog.Logger

	ctx    context.Context // parent of keep-alives and watches; done once closed
	cancel context.CancelFunc
	wg     sync.WaitGroup // keep-alive and watch goroutines

	mu     sync.Mutex
	closed bool
	regs   map[*etcdReg]struct{} // live registrations, withdrawn by Close

	seenMu sync.Mutex
	seen   map[string]*etcdSeen // by etcd key
}

// etcdSeen is the verdict on one revision of a record, so that a record is
// verified once rather than on every lookup, and a bad one logged once.
type etcdSeen struct {
	rev    int64
	ep     resolve.Endpoint
	err    error
	logged atomic.Bool
}

// etcdRecord is a registration's value.
type etcdRecord struct {
	V    int                 `json:"v"`
	Addr netip.AddrPort      `json:"addr"`
	Key  resolve.Fingerprint `json:"key"`
	TTL  time.Duration       `json:"ttl,omitempty"`
	Pub  []byte              `json:"pub"` // Proof.PublicKey
	Sig  []byte              `json:"sig"` // Proof.Signature
}

const (
	etcdDomain        = "roam etcd v1"
	etcdRecordVersion = 1
	etcdMaxRecord     = 8 << 10 // far above a real record; bounds what a hostile one costs
	etcdMaxSeen       = 4096
)

var (
	_ resolve.Resolver        = (*Backend)(nil)
	_ resolve.Registrar       = (*Backend)(nil)
	_ resolve.SignedRegistrar = (*Backend)(nil)
	_ resolve.Watcher         = (*Backend)(nil)
)

// New connects to an etcd cluster, and checks under ctx (and at most
// DialTimeout) that a member answers.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	e := &Backend{
		prefix:  cfg.Prefix,
		timeout: orDefault(cfg.DialTimeout, 5*time.Second),
		log:     cfg.Logger,
		regs:    make(map[*etcdReg]struct{}),
		seen:    make(map[string]*etcdSeen),
	}
	if e.prefix == "" {
		e.prefix = "/roam/"
	}
	if !strings.HasSuffix(e.prefix, "/") {
		e.prefix += "/"
	}
	e.binding = []byte(e.prefix)
	ttl := orDefault(cfg.LeaseTTL, 10*time.Second)
	e.ttl = int64((ttl + time.Second - 1) / time.Second)
	if cfg.StaleReads {
		e.read = []clientv3.OpOption{clientv3.WithSerializable()}
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.cli = cfg.Client
	if e.cli == nil {
		if len(cfg.Endpoints) == 0 {
			return nil, fmt.Errorf("%w: etcd: no endpoints", resolve.ErrInvalid)
		}
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   cfg.Endpoints,
			DialTimeout: e.timeout,
			// Pings find a member that vanished without closing its
			// connections (a partition, a dead machine); etcd refuses
			// pings more often than every 5s.
			DialKeepAliveTime:    10 * time.Second,
			DialKeepAliveTimeout: 5 * time.Second,
			Logger:               zap.New(slogCore{log: e.log}),
		})
		if err != nil {
			return nil, fmt.Errorf("%w: etcd: %w", resolve.ErrInvalid, err)
		}
		e.cli, e.own = cli, true
	}
	cctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	// Any member's answer will do: this checks that one is there, not that
	// the cluster has a quorum.
	if _, err := e.cli.Get(cctx, e.prefix, clientv3.WithSerializable(), clientv3.WithCountOnly()); err != nil {
		if e.own {
			_ = e.cli.Close()
		}
		if cerr := context.Cause(ctx); cerr != nil {
			err = cerr
		}
		return nil, fmt.Errorf("resolve: etcd at %s: %w", strings.Join(e.cli.Endpoints(), ","), err)
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// openEtcd opens the backend that an etcd://host:port[,host:port...]/prefix
// URL names.
func openEtcd(ctx context.Context, u *url.URL) (resolve.Resolver, error) {
	cfg, err := parseEtcdURL(u)
	if err != nil {
		return nil, err
	}
	e, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return e, nil
}

func parseEtcdURL(u *url.URL) (Config, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: etcd URL %q: %s; want etcd://host:port[,host:port...]/prefix",
			resolve.ErrInvalid, u.Redacted(), fmt.Sprintf(format, args...))
	}
	switch {
	case u.Scheme != "etcd":
		return Config{}, bad("scheme is not etcd")
	case u.Opaque != "":
		return Config{}, bad("no // before the endpoints")
	case u.User != nil:
		return Config{}, bad("credentials in the URL are not supported; use New with Config.Client")
	case u.RawQuery != "" || u.Fragment != "":
		return Config{}, bad("queries and fragments are not supported")
	case u.Host == "":
		return Config{}, bad("no endpoint")
	}
	var cfg Config
	for ep := range strings.SplitSeq(u.Host, ",") {
		host, port, err := net.SplitHostPort(ep)
		if err != nil || host == "" {
			return Config{}, bad("endpoint %q is not host:port", ep)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return Config{}, bad("endpoint %q has a bad port", ep)
		}
		cfg.Endpoints = append(cfg.Endpoints, ep)
	}
	if u.Path != "/" {
		cfg.Prefix = u.Path
	}
	return cfg, nil
}

// Resolve returns the endpoints registered for service whose proofs
// verify, in the order their addresses were first registered. While no
// member answers, the client retries for as long as ctx allows: give it a
// deadline (a Cache does, CacheConfig.LookupTimeout).
func (e *Backend) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	svc, err := resolve.ServiceKey("resolve", service)
	if err != nil {
		return nil, err
	}
	if err := e.check(ctx, svc); err != nil {
		return nil, &resolve.Error{Op: "resolve", Service: svc, Err: err}
	}
	resp, err := e.cli.Get(ctx, e.svcPrefix(svc), append([]clientv3.OpOption{clientv3.WithPrefix()}, e.read...)...)
	if err != nil {
		return nil, &resolve.Error{Op: "resolve", Service: svc, Err: e.rpcErr(ctx, err)}
	}
	eps := e.endpointsOf(svc, resp.Kvs)
	if len(eps) == 0 {
		return nil, &resolve.Error{Op: "resolve", Service: svc, Err: resolve.ErrNotFound}
	}
	return eps, nil
}

// check refuses a malformed key label, a done context and a closed Backend,
// before any request.
func (e *Backend) check(ctx context.Context, svc string) error {
	if _, _, err := resolve.IDKey(svc); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if e.ctx.Err() != nil {
		return resolve.ErrClosed
	}
	return nil
}

// rpcErr says why a request failed: the caller's context, Close, or etcd.
func (e *Backend) rpcErr(ctx context.Context, err error) error {
	if cerr := context.Cause(ctx); cerr != nil {
		return cerr
	}
	if e.ctx.Err() != nil {
		return resolve.ErrClosed
	}
	return fmt.Errorf("etcd: %w", err)
}

// Close withdraws every registration, ends every watch and, if New
// dialled the client, closes it. Later calls return errors wrapping
// ErrClosed; closing a Registration stays harmless. Close is idempotent
// and returns nil.
func (e *Backend) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	regs := e.regs
	e.regs = nil
	e.mu.Unlock()

	e.cancel() // ends keep-alives and watches
	e.wg.Wait()
	// Leases would expire by themselves, but only after their TTL: withdraw
	// now, as Memory.Close does.
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	var wg sync.WaitGroup
	for r := range regs {
		wg.Go(func() { _, _ = e.cli.Revoke(ctx, r.currentLease()) })
	}
	wg.Wait()
	if e.own {
		if err := e.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			e.log.Debug("etcd: closing the client", "err", err)
		}
	}
	return nil
}

func (e *Backend) svcPrefix(svc string) string { return e.prefix + "svc/" + url.PathEscape(svc) + "/" }
func (e *Backend) ownerKey(svc string) string  { return e.svcPrefix(svc) + "owner" }
func (e *Backend) epKey(svc string, addr netip.AddrPort) string {
	return e.svcPrefix(svc) + "ep/" + addr.String()
}

// endpointsOf turns a service's keys into the endpoints to answer with:
// those whose records verify and whose key the service is bound to,
// oldest address first.
func (e *Backend) endpointsOf(svc string, kvs []*mvccpb.KeyValue) []resolve.Endpoint {
	prefix := e.svcPrefix(svc)
	owner, pinned, _ := resolve.IDKey(svc) // malformed labels were refused earlier
	if !pinned {
		for _, kv := range kvs {
			if string(kv.Key) == prefix+"owner" {
				// An unreadable owner leaves owner zero, which no
				// record matches.
				owner, _ = resolve.ParseFingerprint(string(kv.Value))
			}
		}
	}
	type found struct {
		rev int64
		ep  resolve.Endpoint
	}
	var recs []found
	for _, kv := range kvs {
		addr, ok := strings.CutPrefix(string(kv.Key), prefix+"ep/")
		if !ok {
			continue
		}
		if ep, ok := e.endpoint(svc, addr, owner, kv); ok {
			recs = append(recs, found{kv.CreateRevision, ep})
		}
	}
	if len(recs) == 0 {
		return nil
	}
	slices.SortFunc(recs, func(a, b found) int {
		return cmp.Or(cmp.Compare(a.rev, b.rev), a.ep.Addr.Compare(b.ep.Addr))
	})
	eps := make([]resolve.Endpoint, len(recs))
	for i, r := range recs {
		eps[i] = r.ep
	}
	return eps
}

// endpoint verifies one record (once per revision) and checks its key
// against the service's owner.
func (e *Backend) endpoint(svc, addr string, owner resolve.Fingerprint, kv *mvccpb.KeyValue) (resolve.Endpoint, bool) {
	k := string(kv.Key)
	e.seenMu.Lock()
	s := e.seen[k]
	e.seenMu.Unlock()
	if s == nil || s.rev != kv.ModRevision {
		s = &etcdSeen{rev: kv.ModRevision}
		s.ep, s.err = e.decode(svc, addr, kv.Value)
		e.seenMu.Lock()
		if len(e.seen) >= etcdMaxSeen {
			clear(e.seen) // crude, but bounded; the next lookups verify again
		}
		e.seen[k] = s
		e.seenMu.Unlock()
	}
	err := s.err
	if err == nil && s.ep.Key != owner {
		if owner.IsZero() {
			err = fmt.Errorf("%w: the service is bound to no key", resolve.ErrNotOwner)
		} else {
			err = fmt.Errorf("%w: signed by %s, the service is bound to %s", resolve.ErrNotOwner, s.ep.Key, owner)
		}
	}
	if err != nil {
		if s.logged.CompareAndSwap(false, true) {
			e.log.Debug("etcd: skipping a record", "key", k, "revision", kv.ModRevision, "err", err)
		}
		return resolve.Endpoint{}, false
	}
	return s.ep, true
}

// decode parses and verifies a record stored under .../ep/<addr>.
func (e *Backend) decode(svc, addr string, value []byte) (resolve.Endpoint, error) {
	if len(value) > etcdMaxRecord {
		return resolve.Endpoint{}, fmt.Errorf("%w: record of %d bytes", resolve.ErrInvalid, len(value))
	}
	var rec etcdRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return resolve.Endpoint{}, fmt.Errorf("%w: record: %w", resolve.ErrInvalid, err)
	}
	if rec.V != etcdRecordVersion {
		return resolve.Endpoint{}, fmt.Errorf("%w: record version %d, want %d", resolve.ErrInvalid, rec.V, etcdRecordVersion)
	}
	ep := resolve.Endpoint{Addr: rec.Addr, Key: rec.Key, TTL: rec.TTL}
	if err := ep.Validate(); err != nil {
		return resolve.Endpoint{}, err
	}
	if ep.Addr.String() != addr {
		// A copy of a real record under another address's key: it would
		// make the address's registration impossible to replace.
		return resolve.Endpoint{}, fmt.Errorf("%w: record for %s stored under %s", resolve.ErrInvalid, ep.Addr, addr)
	}
	proof := resolve.Proof{PublicKey: rec.Pub, Signature: rec.Sig}
	if err := proof.Verify(etcdDomain, e.binding, svc, ep); err != nil {
		return resolve.Endpoint{}, err
	}
	return ep, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
