package resolve

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/roamnet/roam/resolve/internal/shrink"
)

// How a Health follows a service's endpoints: the wrapped resolver's
// answers become s.base, each endpoint in it is scheduled for probes
// (health_sched.go), and watchers get the healthy subset.
//
// Lock order: the wrapped resolver's own lock (a Memory's, held while it
// calls a watch function), then Health.mu. So nothing here calls into the
// wrapped resolver with Health.mu held.

// startLocked begins following the service key. The caller must call
// subscribe(s) once it has released h.mu. h.mu must be held.
func (h *Health) startLocked(key string) *hservice {
	// Not a child of h.ctx: a parent context keeps a map of its children
	// that never shrinks, which a flood of watched names would grow for
	// good. Close stops every service, and cancels it, all the same.
	ctx, cancel := context.WithCancel(context.Background())
	s := &hservice{
		key:    key,
		ctx:    ctx,
		cancel: cancel,
		asked:  time.Now(),
		subs:   make(map[*hwatch]struct{}),
		loaded: make(chan struct{}),
		eps:    make(map[netip.AddrPort]*hendpoint),
	}
	h.services[key] = s
	h.startSchedulerLocked()
	if h.funcs == nil {
		h.wg.Add(1)
		go h.follow(s)
	}
	return s
}

// subscribe follows s through the wrapped resolver's watch function, when
// it has one: then a service costs no goroutine, however many there are.
// Call it without h.mu.
func (h *Health) subscribe(s *hservice) {
	if h.funcs == nil {
		return
	}
	unwatch, err := h.funcs.WatchFunc(s.ctx, s.key, func(eps []Endpoint, ok bool) {
		if ok {
			h.setBase(s, eps)
		} else {
			h.lost(s, ErrClosed)
		}
	})
	if err != nil {
		h.lost(s, err)
		return
	}
	h.mu.Lock()
	stopped := s.ctx.Err() != nil
	if !stopped {
		s.unwatch = unwatch
	}
	h.mu.Unlock()
	if stopped { // meanwhile; stopLocked found nothing to end
		unwatch()
	}
}

// lost stops s when the wrapped resolver ended its watch (it was closed)
// or refused it; a later Resolve or Watch starts it afresh.
func (h *Health) lost(s *hservice, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.ctx.Err() != nil {
		return // stopped by us: the watch ended because s.ctx did
	}
	select {
	case <-s.loaded:
	default:
		s.loadErr = err
	}
	h.stopLocked(s.key, s)
}

// stopLocked stops probing s and ends its watches. h.mu must be held.
func (h *Health) stopLocked(key string, s *hservice) {
	if h.services[key] == s {
		shrink.Delete(&h.services, key, &h.servicesPeak)
	}
	s.cancel()
	if s.unwatch != nil {
		// Not here, under h.mu: the wrapped resolver's lock comes first.
		h.sched.unwatch = append(h.sched.unwatch, s.unwatch)
		s.unwatch = nil
		h.kick()
	}
	for _, e := range s.eps {
		h.forgetLocked(e)
	}
	for w := range s.subs {
		if w.started {
			w.fn(nil, false)
		}
	}
	clear(s.subs)
	closeOnce(s.loaded)
}

// dropIfUnusedLocked stops s at once when nothing keeps it: not tracked,
// not watched, and no endpoint to probe. Waiting for Idle would keep, for
// a minute, the state of every name a departed client watched. h.mu must
// be held.
func (h *Health) dropIfUnusedLocked(s *hservice) {
	if s.tracked || len(s.subs) > 0 || len(s.base) > 0 || s.ctx.Err() != nil {
		return
	}
	select {
	case <-s.loaded:
		h.stopLocked(s.key, s)
	default: // its first answer is still to come
	}
}

// sweepIdleLocked stops the services nobody has asked about for Idle.
// h.mu must be held.
func (h *Health) sweepIdleLocked(now time.Time) {
	for key, s := range h.services {
		if !s.tracked && len(s.subs) == 0 && now.Sub(s.asked) >= h.idle {
			h.stopLocked(key, s)
		}
	}
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// follow keeps s.base up to date for a wrapped resolver without a watch
// function: from its watch when it is a Watcher, by polling every
// Interval otherwise.
func (h *Health) follow(s *hservice) {
	defer h.wg.Done()
	var updates <-chan []Endpoint
	if h.watcher != nil {
		if ch, err := h.watcher.Watch(s.ctx, s.key); err == nil {
			updates = ch
		}
	}
	if updates == nil {
		h.poll(s)
	}
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case eps, ok := <-updates:
			if !ok {
				// The wrapped resolver ended the watch: poll from now on.
				updates = nil
				h.poll(s)
				continue
			}
			h.setBase(s, eps)
		case <-tick.C:
			if updates == nil {
				h.poll(s)
			}
		}
	}
}

func (h *Health) poll(s *hservice) {
	ctx, cancel := context.WithTimeout(s.ctx, h.timeout)
	eps, err := h.r.Resolve(ctx, s.key)
	cancel()
	switch {
	case s.ctx.Err() != nil:
	case err == nil:
		h.setBase(s, eps)
	case errors.Is(err, ErrNotFound):
		h.setBase(s, nil)
	default:
		// Keep what we knew: a resolver that fails for a moment says
		// nothing about the endpoints.
		h.mu.Lock()
		select {
		case <-s.loaded:
		default:
			s.loadErr = err
			close(s.loaded)
		}
		h.mu.Unlock()
	}
}

// setBase takes a new answer of the wrapped resolver: new endpoints are
// scheduled for probes (as up), withdrawn ones are forgotten.
func (h *Health) setBase(s *hservice, eps []Endpoint) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.ctx.Err() != nil {
		return
	}
	s.base, s.loadErr = eps, nil
	seen := make(map[netip.AddrPort]bool, len(eps))
	for _, ep := range eps {
		seen[ep.Addr] = true
		e := s.eps[ep.Addr]
		if e != nil && e.ep.Key != ep.Key {
			// Another Host took the address: what we knew was about
			// the old one.
			h.forgetLocked(e)
			e = nil
		}
		if e != nil {
			e.ep = ep
			continue
		}
		e = h.newEndpointLocked(s, ep)
		s.eps[ep.Addr] = e
	}
	for addr, e := range s.eps {
		if !seen[addr] {
			h.forgetLocked(e)
			delete(s.eps, addr)
		}
	}
	closeOnce(s.loaded)
	h.publishLocked(s)
	h.dropIfUnusedLocked(s)
}

// recordLocked applies one probe's outcome, and tells watchers when it
// changed the set of endpoints that are up. h.mu must be held.
func (h *Health) recordLocked(s *hservice, e *hendpoint, rtt time.Duration, err error) {
	e.checked = time.Now()
	if err == nil {
		e.fails, e.err, e.rtt = 0, nil, rtt
		e.observeRTT(rtt)
		e.answered = true
		if e.up {
			return
		}
		e.up = true
		h.log.Info("endpoint up", "service", s.key, "endpoint", e.ep.Addr, "rtt", rtt)
	} else {
		e.fails++
		e.err = err
		if !e.up || e.fails < h.failures {
			return
		}
		e.up = false
		h.log.Warn("endpoint down", "service", s.key, "endpoint", e.ep.Addr, "failures", e.fails, "err", err)
	}
	h.publishLocked(s)
}

// filterLocked leaves the endpoints that are down out of eps; when that
// leaves none, the result is empty unless HealthConfig.AnswerWhenAllDown
// asks for all of them. An endpoint whose address is unknown here, or
// known with another key, counts as up. h.mu must be held.
func (h *Health) filterLocked(s *hservice, eps []Endpoint) []Endpoint {
	isDown := func(ep Endpoint) bool {
		e := s.eps[ep.Addr]
		return e != nil && !e.up && e.ep.Key == ep.Key
	}
	down := 0
	for _, ep := range eps {
		if isDown(ep) {
			down++
		}
	}
	switch {
	case down == 0:
		return eps
	case down == len(eps) && h.allDown:
		return eps
	case down == len(eps):
		return []Endpoint{}
	}
	out := make([]Endpoint, 0, len(eps)-down)
	for _, ep := range eps {
		if !isDown(ep) {
			out = append(out, ep)
		}
	}
	return out
}

// publishLocked hands the current healthy set to every watcher if it
// changed. h.mu must be held: each watcher's function runs under it.
func (h *Health) publishLocked(s *hservice) {
	out := h.filterLocked(s, s.base)
	if slices.Equal(out, s.pushed) {
		return
	}
	s.pushed = out
	for w := range s.subs {
		if w.started { // the others get the current set when they start
			w.fn(out, true)
		}
	}
}
