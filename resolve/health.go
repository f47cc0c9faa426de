package resolve

import (
	"context"
	"crypto"
	"log/slog"
	"net/netip"
	"sync"
	"time"
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
	// Timeout bounds one probe. If zero, 1 s.
	Timeout time.Duration
	// Failures is how many consecutive failed probes mark an endpoint
	// down. One success marks it up again. If zero, 3.
	//
	// A provider that vanishes is thus out of answers and watches within
	// Interval*Failures + Timeout: 4 s with the defaults.
	Failures int
	// Idle is how long a service keeps being probed after its last
	// Resolve or watch, unless it is tracked. If zero, 1 min.
	Idle time.Duration
	// Concurrency bounds the probes in flight at once, across all
	// services. If zero, 64.
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
	r        Resolver
	watcher  Watcher // r as a Watcher, or nil
	p        Prober
	interval time.Duration
	timeout  time.Duration
	failures int
	idle     time.Duration
	allDown  bool // HealthConfig.AnswerWhenAllDown
	log      *slog.Logger
	sem      chan struct{} // one slot per probe in flight
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	services map[string]*hservice
	closed   bool
}

// hservice is one service being probed. Its fields are guarded by
// Health.mu.
type hservice struct {
	key     string
	ctx     context.Context // ends when the service stops being probed
	cancel  context.CancelFunc
	tracked bool
	asked   time.Time            // last Resolve, or end of the last watch
	subs    map[*hwatch]struct{} // Watch callers
	loaded  chan struct{}        // closed once base is known, or the service stopped
	loadErr error                // why the first load failed, until one succeeds
	base    []Endpoint           // the wrapped resolver's newest answer
	eps     map[netip.AddrPort]*hendpoint
	pushed  []Endpoint // the set watchers last got
}

type hendpoint struct {
	ep      Endpoint
	cancel  context.CancelFunc // stops its probe loop
	up      bool
	fails   int
	rtt     time.Duration
	err     error
	checked time.Time
}

type hwatch struct {
	ch   chan []Endpoint
	stop func() bool
}

var (
	_ Resolver        = (*Health)(nil)
	_ Watcher         = (*Health)(nil)
	_ Registrar       = (*Health)(nil)
	_ SignedRegistrar = (*Health)(nil)
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
	h.watcher, _ = r.(Watcher)
	if h.failures <= 0 {
		h.failures = 3
	}
	n := cfg.Concurrency
	if n <= 0 {
		n = 64
	}
	h.sem = make(chan struct{}, n)
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
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, &Error{Op: "resolve", Service: key, Err: ErrClosed}
	}
	s := h.services[key]
	if err != nil || len(eps) == 0 {
		// Nothing to probe; but a service already followed stays so.
		if s != nil {
			s.asked = time.Now()
		}
		return eps, err
	}
	if s == nil {
		s = h.startLocked(key)
	}
	s.asked = time.Now()
	if out := h.filterLocked(s, eps); len(out) > 0 {
		return out, nil
	}
	return nil, &Error{Op: "resolve", Service: key, Err: ErrAllDown}
}

// Watch implements Watcher: it sends the service's healthy endpoints (as
// Resolve filters them; an empty set when all are down) at once, and again
// after every change, until ctx ends. A slow reader sees only the newest
// set.
func (h *Health) Watch(ctx context.Context, service string) (<-chan []Endpoint, error) {
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
	if s == nil {
		s = h.startLocked(key)
	}
	w := &hwatch{ch: make(chan []Endpoint, 1)}
	s.subs[w] = struct{}{}
	loaded := s.loaded
	h.mu.Unlock()

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
		delete(s.subs, w)
		s.asked = time.Now()
		err := s.loadErr
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, asError("watch", key, err)
	}
	select {
	case <-w.ch: // a set published meanwhile; the current one follows
	default:
	}
	w.ch <- s.pushed
	w.stop = context.AfterFunc(ctx, func() { h.endWatch(s, w) })
	return w.ch, nil
}

func (h *Health) endWatch(s *hservice, w *hwatch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := s.subs[w]; !ok {
		return // Close got there first
	}
	delete(s.subs, w)
	close(w.ch)
	s.asked = time.Now()
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
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	s := h.services[key]
	if s == nil {
		s = h.startLocked(key)
	}
	s.tracked = true
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
