package resolve

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/roamnet/roam/resolve/internal/shrink"
)

// Memory is an in-process Resolver, Registrar and Watcher: the backend for
// Hosts that share one process, for tests and for examples. It is safe for
// concurrent use. The zero value is not usable; call NewMemory.
//
// Service IDs are case-folded and matched exactly. A service may have many
// endpoints, one per address: registering an address that the service
// already has replaces the older registration's Key and TTL, as a second
// put of one key does in etcd. The older Registration is then superseded:
// closing it does nothing, and closing the newer one withdraws the address.
//
// Resolve returns a slice that Memory never modifies afterwards (each change
// builds a new one), so callers can keep it but must not modify it. Watch
// channels carry the same slices.
type Memory struct {
	mu       sync.RWMutex
	services map[string]*memService // nil once closed
	peak     int                    // for shrink.Delete
}

type memService struct {
	regs         []*memReg // live registrations, one per address, oldest first
	eps          []Endpoint
	watchers     map[*memWatch]struct{}
	watchersPeak int // for shrink.Delete
}

type memReg struct {
	m       *Memory
	service string
	ep      Endpoint
	live    bool // guarded by m.mu; false once closed or superseded
}

type memWatch struct {
	fn func(eps []Endpoint, ok bool) // called under m.mu; see WatchFunc
}

var (
	_ Resolver  = (*Memory)(nil)
	_ Registrar = (*Memory)(nil)
	_ Watcher   = (*Memory)(nil)
)

// NewMemory returns an empty in-process registry.
func NewMemory() *Memory {
	return &Memory{services: make(map[string]*memService)}
}

// Resolve returns the endpoints registered for service, in the order their
// addresses were first registered. The slice is shared and immutable.
func (m *Memory) Resolve(ctx context.Context, service string) ([]Endpoint, error) {
	key, err := serviceKey("resolve", service)
	if err != nil {
		return nil, err
	}
	if err := context.Cause(ctx); err != nil {
		return nil, &Error{Op: "resolve", Service: key, Err: err}
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.services == nil {
		return nil, &Error{Op: "resolve", Service: key, Err: ErrClosed}
	}
	if s := m.services[key]; s != nil && len(s.eps) > 0 {
		return s.eps, nil
	}
	return nil, &Error{Op: "resolve", Service: key, Err: ErrNotFound}
}

// Register adds ep to service until the returned Registration is closed.
// ep.Addr must be a valid address with a non-zero port; an unspecified IP
// (0.0.0.0 or ::) is allowed and means "this machine".
func (m *Memory) Register(ctx context.Context, service string, ep Endpoint) (Registration, error) {
	key, err := serviceKey("register", service)
	if err != nil {
		return nil, err
	}
	if err := validEndpoint(ep); err != nil {
		return nil, &Error{Op: "register", Service: key, Err: err}
	}
	if err := context.Cause(ctx); err != nil {
		return nil, &Error{Op: "register", Service: key, Err: err}
	}
	r := &memReg{m: m, service: key, ep: ep, live: true}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.services == nil {
		return nil, &Error{Op: "register", Service: key, Err: ErrClosed}
	}
	s := m.service(key)
	i := slices.IndexFunc(s.regs, func(o *memReg) bool { return o.ep.Addr == ep.Addr })
	if i >= 0 {
		// Keep the address's place so that a refresh does not reorder the
		// answer, which clients may use for preference.
		s.regs[i].live = false
		s.regs[i] = r
	} else {
		s.regs = append(s.regs, r)
	}
	s.changed()
	return r, nil
}

// Close withdraws the endpoint unless a newer registration of the same
// address superseded this one. It always returns nil.
func (r *memReg) Close() error {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if !r.live {
		return nil
	}
	r.live = false
	s := m.services[r.service]
	s.regs = slices.DeleteFunc(s.regs, func(o *memReg) bool { return o == r })
	s.changed()
	m.forget(r.service, s)
	return nil
}

// Watch implements Watcher. Each watch holds a channel of capacity one and,
// until ctx ends, no goroutine: a change replaces any value the reader has
// not taken yet, so a slow reader never blocks a registrar.
func (m *Memory) Watch(ctx context.Context, service string) (<-chan []Endpoint, error) {
	ch := make(chan []Endpoint, 1)
	stop, err := m.WatchFunc(ctx, service, latestOnly(ch))
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, stop)
	return ch, nil
}

// latestOnly returns a watch function that keeps the newest set in ch,
// replacing one the reader has not taken, and closes ch when the watch
// ends. Its caller must be the only sender on ch (it runs under the
// resolver's lock), so that after draining a stale value the send cannot
// block.
func latestOnly(ch chan []Endpoint) func([]Endpoint, bool) {
	return func(eps []Endpoint, ok bool) {
		if !ok {
			close(ch)
			return
		}
		select {
		case <-ch:
		default:
		}
		ch <- eps
	}
}

// WatchFunc implements FuncWatcher: it is Watch without a channel, nor a
// goroutine. fn gets the current set at once, then every new one, and
// fn(nil, false) when the watch ends, at stop or Close, after which it is
// not called again. fn runs with the Memory's lock held: it must not
// block, nor call the Memory. ctx is only checked here.
func (m *Memory) WatchFunc(ctx context.Context, service string, fn func(eps []Endpoint, ok bool)) (stop func(), _ error) {
	key, err := serviceKey("watch", service)
	if err != nil {
		return nil, err
	}
	if err := context.Cause(ctx); err != nil {
		return nil, &Error{Op: "watch", Service: key, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.services == nil {
		return nil, &Error{Op: "watch", Service: key, Err: ErrClosed}
	}
	s := m.service(key)
	w := &memWatch{fn: fn}
	fn(s.eps, true)
	s.watchers[w] = struct{}{}
	return func() { m.endWatch(key, w) }, nil
}

func (m *Memory) endWatch(key string, w *memWatch) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.services[key]
	if s == nil {
		return // Close got there first
	}
	if _, ok := s.watchers[w]; !ok {
		return
	}
	shrink.Delete(&s.watchers, w, &s.watchersPeak)
	w.fn(nil, false)
	m.forget(key, s)
}

// Close withdraws every registration and ends every watch. Later calls
// return errors wrapping ErrClosed; closing a Registration stays harmless.
// Close is idempotent and returns nil.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.services {
		for _, r := range s.regs {
			r.live = false
		}
		for w := range s.watchers {
			w.fn(nil, false)
		}
	}
	m.services = nil
	return nil
}

// service returns the record for key, creating it. m.mu must be held.
func (m *Memory) service(key string) *memService {
	s := m.services[key]
	if s == nil {
		s = &memService{watchers: make(map[*memWatch]struct{})}
		m.services[key] = s
	}
	return s
}

// forget drops a record that holds nothing, so that resolving or watching
// many names does not grow the map for ever. m.mu must be held.
func (m *Memory) forget(key string, s *memService) {
	if len(s.regs) == 0 && len(s.watchers) == 0 {
		shrink.Delete(&m.services, key, &m.peak)
	}
}

// changed rebuilds the snapshot and hands it to every watcher. The caller
// holds m.mu, as WatchFunc promises its functions.
func (s *memService) changed() {
	var eps []Endpoint
	if len(s.regs) > 0 {
		eps = make([]Endpoint, len(s.regs))
		for i, r := range s.regs {
			eps[i] = r.ep
		}
	}
	s.eps = eps
	for w := range s.watchers {
		w.fn(eps, true)
	}
}

func validEndpoint(ep Endpoint) error { return ep.Validate() }

// Validate reports, wrapping ErrInvalid, what makes ep unfit to register:
// no address, port 0 or a negative TTL.
func (ep Endpoint) Validate() error {
	switch {
	case !ep.Addr.Addr().IsValid():
		return fmt.Errorf("%w: endpoint has no address", ErrInvalid)
	case ep.Addr.Port() == 0:
		return fmt.Errorf("%w: endpoint %v has port 0", ErrInvalid, ep.Addr)
	case ep.TTL < 0:
		return fmt.Errorf("%w: endpoint %v has negative TTL %v", ErrInvalid, ep.Addr, ep.TTL)
	}
	return nil
}
