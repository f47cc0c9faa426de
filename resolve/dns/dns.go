package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/roamnet/roam/resolve"
)

// Config configures a Resolver. The zero value asks the system's
// nameservers, and New never modifies the Config it is given.
type Config struct {
	// Servers are the nameservers to ask, in order: "ip:port",
	// "[ipv6]:port", or a bare IP for port 53. If empty, the "nameserver"
	// lines of /etc/resolv.conf, read once by New.
	Servers []string
	// Timeout bounds one query attempt to one server. If zero, 2s.
	Timeout time.Duration
	// Attempts is how many times each server is asked before a query
	// fails. If zero, 2.
	Attempts int
	// MaxStale is how long past its expiry an answer is still served while
	// refreshes fail (RFC 8767). If zero, 1h. If negative, never.
	MaxStale time.Duration
	// MinTTL floors the TTLs of answers, so that tiny TTLs do not turn
	// every dial into a query. If zero, 1s.
	MinTTL time.Duration
	// Now returns the current time; tests set it to drive expiry. If nil,
	// time.Now. Network timeouts use the real clock whatever Now says.
	Now func() time.Time
	// Logger receives failed refreshes (Warn) and failed or ignored queries
	// (Debug). If nil, nothing is logged.
	Logger *slog.Logger
}

// Resolver is a read-only resolve.Resolver over the Domain Name System,
// for services published at internet scale. It is also a
// resolve.Watcher, and is safe for concurrent use.
//
// Service NAME is the SRV record set at "_roam._udp.NAME." (RFC 2782): each
// record's target and port, with the target's A and AAAA addresses, taken
// from the SRV reply's additional section when it has some for the target
// and asked for otherwise. A TXT record at the same name holding
// "key=<fingerprint>" (the text form of a resolve.Fingerprint) pins that key
// on every endpoint of the answer. A pin that does not parse, or a TXT query
// that fails, fails the lookup: a pin is never silently dropped.
//
// Endpoints come ordered as RFC 2782 says to try them: by priority, and
// within a priority in a weighted random order drawn anew at each refresh.
// All endpoints of an answer carry one TTL: the lowest TTL of the records
// used, floored at MinTTL, counted down while the answer is kept.
//
// Answers are kept until their TTL runs out; then the next Resolve asks
// again, and concurrent Resolves of one service share that one refresh.
// If the refresh fails (timeouts, SERVFAIL...), the old answer is served,
// stale, for up to MaxStale past its expiry: the refresh is retried at most
// every 30s meanwhile, and a caller holding a stale answer waits at most
// one Timeout for a refresh. NXDOMAIN, or no SRV record, is authoritative:
// the answer is dropped and Resolve returns resolve.ErrNotFound. A
// resolve.Cache in front of a Resolver remembers not-found answers, which
// the Resolver does not, and honours the TTLs that it reports; the stale
// answers that keep services reachable while the nameservers are down can
// only come from the Resolver itself.
//
// Each query goes over UDP from a new socket (a random source port) with a
// random ID and an EDNS0 record offering 1232 bytes; replies that do not
// match the ID and question are ignored, and a truncated reply is asked
// again over TCP. Servers are asked in order, Attempts rounds over all.
// DNS answers are not validated (no DNSSEC): a key pinned by TXT is as
// trustworthy as the path to the nameservers, while a service ID that
// carries its key ("rk--<fingerprint>...") needs no such trust.
//
// Errors are *resolve.Error values. Their cause wraps resolve.ErrNotFound,
// resolve.ErrInvalid (a name DNS cannot carry),
// resolve.ErrInvalidFingerprint (a broken pin), resolve.ErrClosed, the
// caller's context's cause, or ErrFailure, in which case it holds a
// *QueryError. When a stale answer ages past MaxStale, the error says
// "dns: stale answer expired" and wraps the refresh's error.
type Resolver struct {
	servers  []netip.AddrPort
	timeout  time.Duration
	attempts int
	maxStale time.Duration // < 0: never serve stale
	minTTL   time.Duration
	now      func() time.Time
	log      *slog.Logger
	intN     func(int) int // for the SRV weight draw

	ctx    context.Context // parent of every refresh; done once closed
	cancel context.CancelFunc
	wg     sync.WaitGroup // refreshes in progress

	mu      sync.Mutex
	entries map[string]*dnsEntry
	flights map[string]*dnsFlight
	sweepAt int // sweep dead entries when there are this many
	closed  bool
}

// dnsEntry is the last good answer for one service.
type dnsEntry struct {
	eps     []resolve.Endpoint // handed out, so never modified: a new TTL makes a new slice
	shown   time.Duration      // the TTL that eps carry
	expires time.Time
	retryAt time.Time // after a failed refresh: serve stale without asking until then
}

// dnsFlight is one refresh, which concurrent Resolves of a service share.
type dnsFlight struct {
	done chan struct{}
	eps  []resolve.Endpoint // set before done is closed
	err  error
}

// errStaleExpired begins the error of a refresh that failed after the
// last good answer aged past MaxStale.
var errStaleExpired = errors.New("dns: stale answer expired")

// staleRetry is how long a stale answer is served without asking again
// after a failed refresh: RFC 8767's suggested "failure recheck timer".
const staleRetry = 30 * time.Second

var _ resolve.Resolver = (*Resolver)(nil)

// orDefault returns d, or def if d is zero or negative.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// New returns a Resolver. It fails if cfg.Servers holds an address that
// does not parse (resolve.ErrInvalid), or if cfg.Servers is empty and
// /etc/resolv.conf cannot be read or lists no nameserver. It sends nothing.
func New(cfg Config) (*Resolver, error) {
	var servers []netip.AddrPort
	var err error
	if len(cfg.Servers) > 0 {
		servers, err = parseServers(cfg.Servers)
	} else {
		servers, err = readResolvConf(resolvConfPath)
	}
	if err != nil {
		return nil, err
	}
	d := &Resolver{
		servers:  servers,
		timeout:  orDefault(cfg.Timeout, 2*time.Second),
		attempts: cfg.Attempts,
		maxStale: cfg.MaxStale,
		minTTL:   orDefault(cfg.MinTTL, time.Second),
		now:      cfg.Now,
		log:      cfg.Logger,
		intN:     rand.IntN,
		entries:  make(map[string]*dnsEntry),
		flights:  make(map[string]*dnsFlight),
		sweepAt:  1024,
	}
	if d.attempts <= 0 {
		d.attempts = 2
	}
	if d.maxStale == 0 {
		d.maxStale = time.Hour
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// Resolve returns the service's endpoints, from memory while the last
// answer is fresh (even if ctx is done) and from DNS otherwise. The slice
// is shared: do not modify it.
func (d *Resolver) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	key, err := resolve.ServiceKey("resolve", service)
	if err != nil {
		return nil, err
	}
	// The fresh path takes a lock and reads the clock, and allocates
	// nothing: the TTL it reports changes, and so allocates a new slice, at
	// most once a second.
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, &resolve.Error{Op: "resolve", Service: key, Err: resolve.ErrClosed}
	}
	now := d.now()
	e := d.entries[key]
	if e != nil && now.Before(e.expires) {
		eps := e.view(d.freshTTL(e, now))
		d.mu.Unlock()
		return eps, nil
	}
	staleOK := e != nil && d.staleOK(e, now)
	if staleOK && now.Before(e.retryAt) {
		eps := e.view(d.staleTTL(e, now))
		d.mu.Unlock()
		return eps, nil
	}
	if err := context.Cause(ctx); err != nil {
		d.mu.Unlock()
		return nil, &resolve.Error{Op: "resolve", Service: key, Err: err}
	}
	f := d.flights[key]
	if f == nil {
		qname, err := dnsQueryName(key)
		if err != nil {
			d.mu.Unlock()
			return nil, &resolve.Error{Op: "resolve", Service: key, Err: err}
		}
		// The refresh runs on d's context, not the caller's: others may
		// share it, and its answer is kept even if every caller gives up.
		f = &dnsFlight{done: make(chan struct{})}
		d.flights[key] = f
		d.wg.Add(1)
		go d.refresh(key, qname, f)
	}
	d.mu.Unlock()

	// Holding a stale answer, wait for the refresh one query Timeout at
	// most (RFC 8767's client response timer): a dead server must not stall
	// every dial for all its attempts.
	var staleAfter <-chan time.Time
	if staleOK {
		t := time.NewTimer(d.timeout)
		defer t.Stop()
		staleAfter = t.C
	}
	for {
		select {
		case <-f.done:
			return f.eps, f.err
		case <-ctx.Done():
			select {
			case <-f.done: // both were ready: an answer beats an error
				return f.eps, f.err
			default:
			}
			return nil, &resolve.Error{Op: "resolve", Service: key, Err: context.Cause(ctx)}
		case <-staleAfter:
			staleAfter = nil
			d.mu.Lock()
			now := d.now()
			if e := d.entries[key]; e != nil && d.staleOK(e, now) {
				eps := e.view(d.staleTTL(e, now))
				d.mu.Unlock()
				return eps, nil
			}
			d.mu.Unlock()
		}
	}
}

// refresh looks the service up and files the outcome for f's waiters and
// for later Resolves.
func (d *Resolver) refresh(key, qname string, f *dnsFlight) {
	defer d.wg.Done()
	eps, ttl, err := d.lookup(d.ctx, qname)
	d.mu.Lock()
	defer close(f.done) // after the Unlock below: deferred calls run last-in first-out
	defer d.mu.Unlock()
	delete(d.flights, key)
	now := d.now()
	e := d.entries[key]
	switch {
	case d.closed:
		f.err = &resolve.Error{Op: "resolve", Service: key, Err: resolve.ErrClosed}
	case err == nil:
		for i := range eps {
			eps[i].TTL = ttl
		}
		e = &dnsEntry{eps: eps, shown: ttl, expires: now.Add(ttl)}
		d.store(key, e, now)
		f.eps = e.view(d.freshTTL(e, now))
	case errors.Is(err, resolve.ErrNotFound):
		// Authoritative: the service is gone, whatever we knew of it.
		delete(d.entries, key)
		f.err = &resolve.Error{Op: "resolve", Service: key, Err: err}
	case e != nil && d.staleOK(e, now):
		e.retryAt = now.Add(staleRetry)
		f.eps = e.view(d.staleTTL(e, now))
		d.log.Warn("dns: refresh failed; serving the stale answer", "service", key, "expired", now.Sub(e.expires), "err", err)
	case e != nil:
		delete(d.entries, key)
		f.err = &resolve.Error{Op: "resolve", Service: key, Err: fmt.Errorf("%w (%v past expiry, MaxStale %v): %w", errStaleExpired, now.Sub(e.expires), max(d.maxStale, 0), err)}
	default:
		f.err = &resolve.Error{Op: "resolve", Service: key, Err: err}
	}
}

// store files e for key. As keys are services that were asked for, the
// map grows with the working set; dead entries (past their stale window)
// are swept whenever it doubles. d.mu must be held.
func (d *Resolver) store(key string, e *dnsEntry, now time.Time) {
	d.entries[key] = e
	if len(d.entries) < d.sweepAt {
		return
	}
	for k, e := range d.entries {
		if !now.Before(e.expires) && !d.staleOK(e, now) {
			delete(d.entries, k)
		}
	}
	d.sweepAt = max(2*len(d.entries), 1024)
}

// staleOK reports whether e, expired, may still be served at now.
func (d *Resolver) staleOK(e *dnsEntry, now time.Time) bool {
	return d.maxStale >= 0 && now.Before(e.expires.Add(d.maxStale))
}

// freshTTL is what is left of e's lifetime, in whole seconds (as DNS
// counts) once above a second, and floored at MinTTL.
func (d *Resolver) freshTTL(e *dnsEntry, now time.Time) time.Duration {
	left := e.expires.Sub(now)
	if left > time.Second {
		left = left.Round(time.Second)
	}
	return max(left, d.minTTL)
}

// staleTTL is how long a stale answer may be kept by the caller: until the
// next refresh may be tried, or the stale window closes if sooner.
func (d *Resolver) staleTTL(e *dnsEntry, now time.Time) time.Duration {
	return max(min(staleRetry, e.expires.Add(d.maxStale).Sub(now)), d.minTTL)
}

// view returns e's endpoints carrying ttl, making a new slice only if
// their TTL changes. d.mu must be held.
func (e *dnsEntry) view(ttl time.Duration) []resolve.Endpoint {
	if ttl != e.shown {
		eps := slices.Clone(e.eps)
		for i := range eps {
			eps[i].TTL = ttl
		}
		e.eps, e.shown = eps, ttl
	}
	return e.eps
}

// Close cancels the lookups in progress, waits for them to end, and makes
// later calls fail with resolve.ErrClosed. It is idempotent and returns nil.
func (d *Resolver) Close() error {
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		clear(d.entries)
		d.cancel()
	}
	d.mu.Unlock()
	d.wg.Wait()
	return nil
}
