package resolve

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// CacheConfig configures a Cache. The zero value is ready to use, and the
// Cache never modifies the CacheConfig it is given.
type CacheConfig struct {
	// Size is the most services, found or not, the cache remembers; the
	// least recently used is dropped first. If zero, 4096.
	Size int
	// TTL is how long to keep an endpoint whose own TTL is zero. An answer
	// lives as long as the shortest-lived of its endpoints. If zero, 30s.
	TTL time.Duration
	// NegativeTTL is how long to remember that a service was not found.
	// If zero, 2s. If negative, not-found answers are not cached. Other
	// errors, such as timeouts, are never cached.
	NegativeTTL time.Duration
	// LookupTimeout bounds one backend lookup, however many callers share
	// it. If zero, 10s.
	LookupTimeout time.Duration
	// Now returns the current time; tests set it to drive expiry. If nil,
	// time.Now.
	Now func() time.Time
}

// Cache is a Resolver that remembers the answers of another one. It is safe
// for concurrent use.
//
// A cached answer costs no allocation and no backend call, and is returned
// even if the caller's context is done. Concurrent misses for one service
// share one backend lookup, which runs on a context detached from every
// caller's cancellation (keeping their values) and bounded by LookupTimeout;
// a caller whose own context ends stops waiting at once, and the lookup is
// cancelled when no caller is left.
//
// When the backend is a Watcher, each cached service is also watched, from
// its first miss until it leaves the cache: pushed changes replace the
// answer at once and it does not expire meanwhile. If the backend ends a
// watch, the answer expires by TTL again and the next miss watches anew.
//
// A Cache adds no Register method: find the Registrar on Unwrap.
type Cache struct {
	backend Resolver
	watcher Watcher // backend as a Watcher, or nil
	ttl     time.Duration
	negTTL  time.Duration // <= 0: negative answers are not cached
	timeout time.Duration
	now     func() time.Time
	lru     *lru.Cache[string, *entry] // mutated only with mu held

	ctx    context.Context // parent of every watch; done once closed
	cancel context.CancelFunc
	wg     sync.WaitGroup // lookups and watches in progress

	mu      sync.Mutex
	flights map[string]*flight
	closed  bool

	hits, misses, collapsed, lookups, updates, evictions atomic.Uint64
	watches                                              atomic.Int64
}

// entry is what the LRU holds for one service. Its answer is replaced as a
// whole, so a hit is one atomic load and a watch can refresh the entry
// without taking any lock.
type entry struct {
	ans  atomic.Pointer[answer]
	stop context.CancelFunc // ends this entry's watch; guarded by Cache.mu
}

type answer struct {
	eps     []Endpoint // owned by the cache: never modified
	err     error      // a not-found *Error for a negative answer
	expires time.Time  // zero while a watch keeps the answer fresh
}

func (a *answer) fresh(now func() time.Time) bool {
	return a.expires.IsZero() || now().Before(a.expires)
}

// flight is one backend lookup that misses for one service wait on.
type flight struct {
	done    chan struct{}
	eps     []Endpoint // set before done is closed
	err     error
	waiters int // guarded by Cache.mu
	cancel  context.CancelFunc
}

// CacheStats counts what a Cache did since it was made.
type CacheStats struct {
	Hits      uint64 // answers served from the cache, found or not found
	Misses    uint64 // answers that waited for a backend lookup
	Collapsed uint64 // misses that joined a lookup already in flight
	Lookups   uint64 // backend Resolve calls
	Updates   uint64 // answers pushed by backend watches
	Evictions uint64 // entries dropped to make room for others
	Entries   int    // services cached now
	Watches   int    // backend watches running now
}

var (
	_ Resolver    = (*Cache)(nil)
	_ Watcher     = (*Cache)(nil)
	_ Invalidator = (*Cache)(nil)
)

// NewCache returns a Cache in front of r, which must not be nil. Closing
// the Cache does not close r.
func NewCache(r Resolver, cfg CacheConfig) *Cache {
	c := &Cache{
		backend: r,
		ttl:     orDefault(cfg.TTL, 30*time.Second),
		negTTL:  cfg.NegativeTTL,
		timeout: orDefault(cfg.LookupTimeout, 10*time.Second),
		now:     cfg.Now,
		flights: make(map[string]*flight),
	}
	c.watcher, _ = r.(Watcher)
	if c.negTTL == 0 {
		c.negTTL = 2 * time.Second
	}
	if c.now == nil {
		c.now = time.Now
	}
	size := cfg.Size
	if size <= 0 {
		size = 4096
	}
	// Cannot fail: size is positive.
	c.lru, _ = lru.NewWithEvict(size, c.onEvict)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Resolve answers from the cache when it can, and otherwise asks the
// backend. Errors are *Error values; a not-found answer wraps ErrNotFound.
// The returned slice is shared: do not modify it.
func (c *Cache) Resolve(ctx context.Context, service string) ([]Endpoint, error) {
	// The hit path must stay free of allocations: no closures, no fmt, no
	// defer. ToLower returns lower-case input as it is.
	key := strings.ToLower(service)
	if e, ok := c.lru.Get(key); ok {
		if a := e.ans.Load(); a.fresh(c.now) {
			c.hits.Add(1)
			return a.eps, a.err
		}
	}
	return c.miss(ctx, key)
}

func (c *Cache) miss(ctx context.Context, key string) ([]Endpoint, error) {
	if err := context.Cause(ctx); err != nil {
		return nil, &Error{Op: "resolve", Service: key, Err: err}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, &Error{Op: "resolve", Service: key, Err: ErrClosed}
	}
	// A lookup may have filled the entry since the lock-free check.
	if e, ok := c.lru.Peek(key); ok {
		if a := e.ans.Load(); a.fresh(c.now) {
			c.mu.Unlock()
			c.hits.Add(1)
			return a.eps, a.err
		}
	}
	c.misses.Add(1)
	f := c.flights[key]
	if f != nil {
		f.waiters++
		c.collapsed.Add(1)
	} else {
		// WithoutCancel keeps the first caller's values (trace IDs) but not
		// its deadline: other callers share this lookup.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		f = &flight{done: make(chan struct{}), waiters: 1, cancel: cancel}
		c.flights[key] = f
		c.wg.Add(1)
		go c.lookup(fctx, key, f)
	}
	c.mu.Unlock()

	select {
	case <-f.done:
		return f.eps, f.err
	case <-ctx.Done():
	}
	select {
	case <-f.done: // both were ready: an answer beats an error
		return f.eps, f.err
	default:
	}
	c.mu.Lock()
	if f.waiters--; f.waiters == 0 {
		f.cancel()
		if c.flights[key] == f {
			delete(c.flights, key)
		}
	}
	c.mu.Unlock()
	return nil, &Error{Op: "resolve", Service: key, Err: context.Cause(ctx)}
}

func (c *Cache) lookup(ctx context.Context, key string, f *flight) {
	defer c.wg.Done()
	defer f.cancel()
	c.lookups.Add(1)
	eps, err := c.backend.Resolve(ctx, key)
	a, cacheable := c.answerFor(key, eps, err)
	c.mu.Lock()
	// A flight that Invalidate, Close or its last leaving waiter detached
	// answers whoever still waits but must not fill the cache.
	if c.flights[key] == f {
		delete(c.flights, key)
		if cacheable {
			c.store(key, a)
		}
	}
	if c.closed {
		a = &answer{err: &Error{Op: "resolve", Service: key, Err: ErrClosed}}
	}
	c.mu.Unlock()
	f.eps, f.err = a.eps, a.err
	close(f.done)
}

// answerFor turns a backend reply into an answer, and says whether it may
// be cached: found, or not found while negative caching is on.
func (c *Cache) answerFor(key string, eps []Endpoint, err error) (*answer, bool) {
	switch {
	case err == nil && len(eps) > 0:
		// Copy: the cache hands the slice out for a long time, and the
		// backend is not bound to keep its own unchanged.
		eps = slices.Clone(eps)
		return &answer{eps: eps, expires: c.now().Add(c.lifetime(eps))}, true
	case err == nil || errors.Is(err, ErrNotFound):
		if err == nil {
			err = ErrNotFound // a backend that answered nothing
		}
		return &answer{err: asError("resolve", key, err), expires: c.now().Add(c.negTTL)}, c.negTTL > 0
	default:
		return &answer{err: asError("resolve", key, err)}, false
	}
}

// lifetime is how long an answer of eps may be served without a watch.
func (c *Cache) lifetime(eps []Endpoint) time.Duration {
	if len(eps) == 0 {
		return c.negTTL
	}
	d := time.Duration(math.MaxInt64)
	for _, ep := range eps {
		if ep.TTL > 0 {
			d = min(d, ep.TTL)
		} else {
			d = min(d, c.ttl)
		}
	}
	return d
}

// store caches a looked-up answer for key. c.mu must be held.
func (c *Cache) store(key string, a *answer) {
	e, ok := c.lru.Get(key)
	switch {
	case !ok:
		e = &entry{}
		e.ans.Store(a)
		if c.lru.Add(key, e) {
			c.evictions.Add(1)
		}
	default:
		// A pushed answer is at least as recent as our lookup: keep it,
		// even if it lands while we are here.
		old := e.ans.Load()
		if old.expires.IsZero() || !e.ans.CompareAndSwap(old, a) {
			return
		}
	}
	if c.watcher != nil && e.stop == nil {
		c.startWatch(key, e)
	}
}

// Invalidate forgets what the cache knows about service, and stops its
// watch; the next Resolve asks the backend. A lookup already in flight
// still answers its waiters but is not cached.
func (c *Cache) Invalidate(service string) {
	key := strings.ToLower(service)
	c.mu.Lock()
	c.lru.Remove(key)
	delete(c.flights, key)
	c.mu.Unlock()
}

// Close empties the cache, stops every watch and makes later calls fail
// with ErrClosed. It waits for lookups in progress, which it cancels, to
// return. It does not close the backend. Close is idempotent and returns nil.
func (c *Cache) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		for key, f := range c.flights {
			f.cancel()
			delete(c.flights, key)
		}
		c.lru.Purge() // stops each entry's watch through onEvict
		c.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// Unwrap returns the backend, where callers find abilities the Cache does
// not add to, such as Registrar.
func (c *Cache) Unwrap() Resolver { return c.backend }

// Stats returns the cache's counters. Each is read atomically, but not all
// at the same instant.
func (c *Cache) Stats() CacheStats {
	return CacheStats{
		Hits:      c.hits.Load(),
		Misses:    c.misses.Load(),
		Collapsed: c.collapsed.Load(),
		Lookups:   c.lookups.Load(),
		Updates:   c.updates.Load(),
		Evictions: c.evictions.Load(),
		Entries:   c.lru.Len(),
		Watches:   int(c.watches.Load()),
	}
}
