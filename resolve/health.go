package resolve

import (
	"context"
	"crypto"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/roamnet/roam/resolve/internal/healthhook"
	"github.com/roamnet/roam/resolve/internal/shrink"
)

// Prober checks that an endpoint still serves a service. A sal.Host is one:
// its Probe sends a SAL ping over the connection flows would use.
// Probe must return once ctx ends.
type Prober interface {
	Probe(ctx context.Context, service string, ep Endpoint) error
}

// ProberFunc adapts a function to Prober.
type ProberFunc func(ctx context.Context, service string, ep Endpoint) error

// Probe calls f.
func (f ProberFunc) Probe(ctx context.Context, service string, ep Endpoint) error {
	return f(ctx, service, ep)
}

// HealthConfig configures a Health. The zero value is ready to use, and
// Health never modifies the HealthConfig it is given.
type HealthConfig struct {
	// Interval is how often each endpoint is probed; successive probes of
	// one endpoint are up to a tenth of it closer, so that endpoints
	// registered together spread out. If zero, 1 s.
	Interval time.Duration
	// Timeout bounds one probe. If zero, 1 s. An endpoint that has
	// answered a probe gets less: three of its round trips (smoothed RTT
	// plus four deviations), at least 200 ms, so that a crashed provider's
	// probes fail fast.
	Timeout time.Duration
	// Failures is how many consecutive failed probes mark an endpoint
	// down. One success marks it up again. If zero, 3.
	//
	// A provider that vanishes is thus out of answers and watches within
	// Interval*Failures plus its probe deadline: 3.2 s with the defaults
	// for one that answered on a fast path, at most 4 s.
	//
	// An endpoint that never answered and is down is probed less and less
	// often, up to every 16 intervals: an address where nothing listens
	// costs little, and comes back within 16 s once something does.
	Failures int
	// Idle is how long a service keeps being probed after its last
	// Resolve or watch, unless it is tracked. If zero, 1 min.
	Idle time.Duration
	// Concurrency bounds the probes in flight at once, across all
	// services. If zero, 64. Endpoints that never answered a probe get at
	// most half of it, so that registrations at dead addresses cannot
	// starve the probes of live ones; and the endpoints of one key (the
	// key they pin, or their service when they pin none) at most a
	// quarter, the keys taking turns.
	Concurrency int
	// AnswerWhenAllDown makes a service whose endpoints are all down
	// resolve to all of them, rather than fail with ErrAllDown and watch
	// as an empty set: for deployments where probes can fail while flows
	// still work (a firewall that drops only probes). If false (the
	// default), a crashed sole provider is out of answers within the bound
	// above, like any other.
	AnswerWhenAllDown bool
	// Logger receives endpoints going down and coming back. If nil,
	// nothing is logged.
	Logger *slog.Logger
}

// EndpointHealth is what a Health knows about one endpoint of a service.
type EndpointHealth struct {
	Endpoint Endpoint
	// Up is false once Failures consecutive probes failed, until one
	// succeeds. An endpoint not probed yet is up.
	Up bool
	// Failures counts the consecutive failed probes; 0 after a success.
	Failures int
	// RTT is how long the last successful probe took.
	RTT time.Duration
	// Err is why the last probe failed; nil when it succeeded.
	Err error
	// Checked is when the last probe ended; zero before the first.
	Checked time.Time
}

// Health is a Resolver that leaves out of its answers the endpoints that
// stopped answering probes: each endpoint of a service in use is probed in
// the background (by a Prober, such as a sal.Host), and one that fails
// HealthConfig.Failures probes in a row is left out until a probe
// succeeds again, long before a registration's lease would run out.
//
// When every endpoint of a service is down, Resolve fails with an error
// wrapping ErrAllDown (which also matches ErrNotFound) and watches get an
// empty set, so that a dial fails at once, with an error that says why,
// instead of waiting on dead addresses. HealthConfig.AnswerWhenAllDown
// answers all of them instead. A sal.Host whose flow must resume still
// tries the flow's last address when the lookup fails so: a provider that
// the probes cannot reach for a moment (a handover) keeps its flows.
//
// Health is also a Watcher, whatever it wraps: a watch sees a new set the
// moment an endpoint goes down or comes back, and changes of the wrapped
// resolver as soon as it pushes them (when it is a Watcher) or at the next
// poll, every Interval (when it is not). Register and RegisterSigned pass
// through to the first resolver down the Unwrap chain that has them, so a
// Health can stand anywhere in a stack.
//
// A service is probed from its first Resolve, Watch or Track, and stops
// being probed HealthConfig.Idle after the last Resolve or watch unless it
// is tracked. Health is safe for concurrent use.
type Health struct {
	r             Resolver
	watcher       Watcher     // r as a Watcher, or nil
	funcs         FuncWatcher // r's watch functions, or nil
	p             Prober
	interval      time.Duration
	timeout       time.Duration
	failures      int
	idle          time.Duration
	allDown       bool // HealthConfig.AnswerWhenAllDown
	concurrency   int
	unprovenSlots int // of concurrency, for endpoints that never answered
	keyBudget     int // probes one key may have in flight
	log           *slog.Logger
	ctx           context.Context
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	mu            sync.Mutex
	services      map[string]*hservice
	servicesPeak  int // for shrink.Delete
	sched         scheduler
	closed        bool
	// chargeTo, when set (by a registry, through internal/healthhook),
	// names the address that registered an endpoint, whose probes are
	// then charged to it rather than to the endpoint's key. It is called
	// with h.mu held.
	chargeTo func(service string, addr netip.AddrPort) (netip.Addr, bool)
}

// FuncWatcher is a resolver that can call a function with each new set of
// a service's endpoints instead of sending it on a channel (Memory,
// Health), so that a watch costs no goroutine, neither while it runs nor
// when it ends: a server that holds thousands of watches for its clients,
// such as the registry, uses it.
//
// WatchFunc calls fn with the current set before it returns, then with
// every new set, and with (nil, false) when the watch ends: at stop
// (which the caller must call without holding a lock that fn takes) or
// when the resolver closes; fn is not called after that. fn runs under
// the resolver's lock: it must not block nor call back into the
// resolver. ctx bounds only the wait for the first set: ending a context
// with a context.AfterFunc would cost a goroutine per watch, thousands at
// once when a connection ends. As with Watch, the sets are shared: never
// modify them.
type FuncWatcher interface {
	WatchFunc(ctx context.Context, service string, fn func(eps []Endpoint, ok bool)) (stop func(), err error)
}

// hservice is one service being probed. Its fields are guarded by
// Health.mu.
type hservice struct {
	key      string
	ctx      context.Context // ends when the service stops being probed
	cancel   context.CancelFunc
	tracked  bool
	asked    time.Time            // last Resolve, or end of the last watch
	subs     map[*hwatch]struct{} // watchers
	subsPeak int                  // for shrink.Delete
	loaded   chan struct{}        // closed once base is known, or the service stopped
	unwatch  func()               // ends the wrapped resolver's watch function; nil without one
	loadErr  error                // why the first load failed, until one succeeds
	base     []Endpoint           // the wrapped resolver's newest answer
	eps      map[netip.AddrPort]*hendpoint
	pushed   []Endpoint // the set watchers last got
}

type hwatch struct {
	fn      func(eps []Endpoint, ok bool) // called under Health.mu
	started bool                          // has had its first set
}

func init() {
	healthhook.ChargeTo = func(h any, registrant func(string, netip.AddrPort) (netip.Addr, bool)) {
		h.(*Health).chargeTo = registrant
	}
}

var (
	_ Resolver        = (*Health)(nil)
	_ Watcher         = (*Health)(nil)
	_ Registrar       = (*Health)(nil)
	_ SignedRegistrar = (*Health)(nil)
	_ FuncWatcher     = (*Health)(nil)
	_ FuncWatcher     = (*Memory)(nil)
)

// NewHealth returns a Health that answers from r and probes with p. Neither
// may be nil. Closing the Health does not close r.
func NewHealth(r Resolver, p Prober, cfg HealthConfig) *Health {
	h := &Health{
		r:        r,
		p:        p,
		interval: orDefault(cfg.Interval, time.Second),
		timeout:  orDefault(cfg.Timeout, time.Second),
		failures: cfg.Failures,
		idle:     orDefault(cfg.Idle, time.Minute),
		allDown:  cfg.AnswerWhenAllDown,
		log:      cfg.Logger,
		services: make(map[string]*hservice),
	}
	h.sched.wake = make(chan struct{}, 1)
	h.sched.perKey = make(map[fairKey]int)
	h.watcher, _ = r.(Watcher)
	h.funcs, _ = r.(FuncWatcher)
	if h.failures <= 0 {
		h.failures = 3
	}
	h.concurrency = cfg.Concurrency
	if h.concurrency <= 0 {
		h.concurrency = 64
	}
	h.unprovenSlots = max(1, h.concurrency/2)
	h.keyBudget = max(1, h.concurrency/4)
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h
}

// Resolve asks the wrapped resolver and leaves out the endpoints that are
// down. When all of them are, it fails with an error wrapping ErrAllDown,
// unless HealthConfig.AnswerWhenAllDown is set. The service is probed from
// now on, for HealthConfig.Idle after the last call.
func (h *Health) Resolve(ctx context.Context, service string) ([]Endpoint, error) {
	key, err := serviceKey("resolve", service)
	if err != nil {
		return nil, err
	}
	if h.isClosed() {
		return nil, &Error{Op: "resolve", Service: key, Err: ErrClosed}
	}
	eps, err := h.r.Resolve(ctx, service)
	out, started, err := h.filter(key, eps, err)
	if started != nil {
		h.subscribe(started)
	}
	return out, err
}

// filter is Resolve's part under h.mu: it leaves out what is down and
// starts following the service when it is new, which the caller must then
// subscribe to (without h.mu).
func (h *Health) filter(key string, eps []Endpoint, err error) (out []Endpoint, started *hservice, _ error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, &Error{Op: "resolve", Service: key, Err: ErrClosed}
	}
	s := h.services[key]
	if err != nil || len(eps) == 0 {
		// Nothing to probe; but a service already followed stays so.
		if s != nil {
			s.asked = time.Now()
		}
		return eps, nil, err
	}
	if s == nil {
		s = h.startLocked(key)
		started = s
	}
	s.asked = time.Now()
	if out := h.filterLocked(s, eps); len(out) > 0 {
		return out, started, nil
	}
	return nil, started, &Error{Op: "resolve", Service: key, Err: ErrAllDown}
}

// Watch implements Watcher: it sends the service's healthy endpoints (as
// Resolve filters them; an empty set when all are down) at once, and again
// after every change, until ctx ends. A slow reader sees only the newest
// set.
func (h *Health) Watch(ctx context.Context, service string) (<-chan []Endpoint, error) {
	ch := make(chan []Endpoint, 1)
	stop, err := h.WatchFunc(ctx, service, latestOnly(ch))
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, stop)
	return ch, nil
}

// WatchFunc implements FuncWatcher: it is Watch without a channel, nor a
// goroutine. fn gets the healthy endpoints as Watch sends them, and runs
// under the Health's lock: it must not block, nor call the Health.
// WatchFunc returns once fn has had the first set, which needs the
// wrapped resolver's first answer.
func (h *Health) WatchFunc(ctx context.Context, service string, fn func(eps []Endpoint, ok bool)) (stop func(), _ error) {
	key, err := serviceKey("watch", service)
	if err != nil {
		return nil, err
	}
	if err := context.Cause(ctx); err != nil {
		return nil, &Error{Op: "watch", Service: key, Err: err}
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, &Error{Op: "watch", Service: key, Err: ErrClosed}
	}
	s := h.services[key]
	started := s == nil
	if started {
		s = h.startLocked(key)
	}
	w := &hwatch{fn: fn}
	s.subs[w] = struct{}{}
	loaded := s.loaded
	h.mu.Unlock()
	if started {
		h.subscribe(s)
	}

	// The first value must be the current set: wait for the first answer
	// of the wrapped resolver.
	select {
	case <-loaded:
	case <-ctx.Done():
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, live := s.subs[w]
	switch {
	case !live || h.closed:
		return nil, &Error{Op: "watch", Service: key, Err: ErrClosed}
	case ctx.Err() != nil || s.loadErr != nil:
		shrink.Delete(&s.subs, w, &s.subsPeak)
		s.asked = time.Now()
		err := s.loadErr
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		h.dropIfUnusedLocked(s)
		return nil, asError("watch", key, err)
	}
	w.started = true
	fn(s.pushed, true)
	return func() { h.endWatch(s, w) }, nil
}

func (h *Health) endWatch(s *hservice, w *hwatch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := s.subs[w]; !ok {
		return // Close got there first
	}
	shrink.Delete(&s.subs, w, &s.subsPeak)
	w.fn(nil, false)
	s.asked = time.Now()
	h.dropIfUnusedLocked(s)
}

// Track probes service's endpoints from now on, whether or not anyone asks
// for them, until Untrack. A registry calls it for what it registers, so
// that its answers are healthy from the first lookup on.
func (h *Health) Track(service string) {
	key, err := serviceKey("track", service)
	if err != nil {
		return
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	s := h.services[key]
	started := s == nil
	if started {
		s = h.startLocked(key)
	}
	s.tracked = true
	h.mu.Unlock()
	if started {
		h.subscribe(s)
	}
}

// Untrack undoes Track: the service is probed on only while Resolve or
// Watch use it (see HealthConfig.Idle).
func (h *Health) Untrack(service string) {
	key, err := serviceKey("untrack", service)
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.services[key]; s != nil {
		s.tracked = false
		h.dropIfUnusedLocked(s)
	}
}

// Status reports the health of each endpoint of service, in the wrapped
// resolver's order; nil when the service is not being probed.
func (h *Health) Status(service string) []EndpointHealth {
	key, err := serviceKey("status", service)
	if err != nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.services[key]
	if s == nil {
		return nil
	}
	out := make([]EndpointHealth, 0, len(s.base))
	for _, ep := range s.base {
		e := s.eps[ep.Addr]
		if e == nil {
			continue
		}
		out = append(out, EndpointHealth{Endpoint: e.ep, Up: e.up, Failures: e.fails, RTT: e.rtt, Err: e.err, Checked: e.checked})
	}
	return out
}

// Register passes through to the first Registrar down the Unwrap chain of
// the wrapped resolver; without one, the error wraps ErrUnsupported.
func (h *Health) Register(ctx context.Context, service string, ep Endpoint) (Registration, error) {
	if reg, ok := findAbility[Registrar](h.r); ok {
		return reg.Register(ctx, service, ep)
	}
	key, _ := serviceKey("register", service)
	return nil, &Error{Op: "register", Service: key, Err: ErrUnsupported}
}

// RegisterSigned is Register for a SignedRegistrar.
func (h *Health) RegisterSigned(ctx context.Context, service string, ep Endpoint, key crypto.Signer) (Registration, error) {
	if reg, ok := findAbility[SignedRegistrar](h.r); ok {
		return reg.RegisterSigned(ctx, service, ep, key)
	}
	name, _ := serviceKey("register", service)
	return nil, &Error{Op: "register", Service: name, Err: ErrUnsupported}
}

// Unwrap returns the wrapped resolver.
func (h *Health) Unwrap() Resolver { return h.r }

// Close stops every probe and ends every watch; later calls fail with
// ErrClosed. It waits for probes in flight, which it cancels. It does not
// close the wrapped resolver. Close is idempotent and returns nil.
func (h *Health) Close() error {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		for key, s := range h.services {
			h.stopLocked(key, s)
		}
		h.cancel()
	}
	h.mu.Unlock()
	h.wg.Wait()
	// What the scheduler did not get to end; it has stopped.
	h.mu.Lock()
	unwatch := h.sched.unwatch
	h.sched.unwatch = nil
	h.mu.Unlock()
	for _, end := range unwatch {
		end()
	}
	return nil
}

func (h *Health) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// findAbility returns the first resolver down r's Unwrap chain that is a T.
func findAbility[T any](r Resolver) (T, bool) {
	for r != nil {
		if t, ok := r.(T); ok {
			return t, true
		}
		u, ok := r.(interface{ Unwrap() Resolver })
		if !ok {
			break
		}
		r = u.Unwrap()
	}
	var zero T
	return zero, false
}
