package resolve

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"
)

// startLocked begins following the service key: its endpoints as the
// wrapped resolver gives them, and a probe loop for each. h.mu must be held.
func (h *Health) startLocked(key string) *hservice {
	ctx, cancel := context.WithCancel(h.ctx)
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
	h.wg.Add(1)
	go h.follow(s)
	return s
}

// stopLocked stops probing s and ends its watches. h.mu must be held.
func (h *Health) stopLocked(key string, s *hservice) {
	if h.services[key] == s {
		delete(h.services, key)
	}
	s.cancel()
	for w := range s.subs {
		if w.stop != nil {
			w.stop()
		}
		close(w.ch)
	}
	clear(s.subs)
	closeOnce(s.loaded)
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// follow keeps s.base up to date, from the wrapped resolver's watch when
// it has one and by polling every Interval otherwise, and stops s once it
// has been idle for HealthConfig.Idle.
func (h *Health) follow(s *hservice) {
	defer h.wg.Done()
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	var updates <-chan []Endpoint
	if h.watcher != nil {
		if ch, err := h.watcher.Watch(s.ctx, s.key); err == nil {
			updates = ch
		}
	}
	if updates == nil {
		h.poll(s)
	}
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
			if h.stopIfIdle(s) {
				return
			}
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

func (h *Health) stopIfIdle(s *hservice) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.tracked || len(s.subs) > 0 || time.Since(s.asked) < h.idle {
		return false
	}
	h.stopLocked(s.key, s)
	return true
}

// setBase takes a new answer of the wrapped resolver: new endpoints start
// being probed (as up), withdrawn ones stop.
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
			e.cancel()
			e = nil
		}
		if e != nil {
			e.ep = ep
			continue
		}
		ctx, cancel := context.WithCancel(s.ctx)
		e = &hendpoint{ep: ep, up: true, cancel: cancel}
		s.eps[ep.Addr] = e
		h.wg.Add(1)
		go h.probeLoop(ctx, s, e)
	}
	for addr, e := range s.eps {
		if !seen[addr] {
			e.cancel()
			delete(s.eps, addr)
		}
	}
	closeOnce(s.loaded)
	h.publishLocked(s)
}

// probeLoop probes e until ctx ends. Probes start at most Interval apart
// whatever they take, so that a vanished endpoint is down within
// Interval*Failures + Timeout of vanishing.
func (h *Health) probeLoop(ctx context.Context, s *hservice, e *hendpoint) {
	defer h.wg.Done()
	// A random first slot spreads endpoints that appeared together.
	next := time.Now().Add(rand.N(h.interval))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		next = next.Add(h.interval - rand.N(h.interval/10+1))
		select {
		case h.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		h.mu.Lock()
		ep := e.ep
		h.mu.Unlock()
		pctx, cancel := context.WithTimeout(ctx, h.timeout)
		start := time.Now()
		err := h.p.Probe(pctx, s.key, ep)
		rtt := time.Since(start)
		cancel()
		<-h.sem
		if ctx.Err() != nil {
			return
		}
		h.record(s, e, rtt, err)
		// A probe that overran its slot delays the next one rather than
		// making a burst to catch up.
		timer.Reset(max(0, time.Until(next)))
		if now := time.Now(); next.Before(now) {
			next = now
		}
	}
}

// record applies one probe's outcome, and tells watchers when it changed
// the set of endpoints that are up.
func (h *Health) record(s *hservice, e *hendpoint, rtt time.Duration, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.eps[e.ep.Addr] != e {
		return // withdrawn meanwhile
	}
	e.checked = time.Now()
	if err == nil {
		e.fails, e.err, e.rtt = 0, nil, rtt
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
// changed. The caller holds h.mu, so it is the only sender on each
// channel: after draining a stale value the send cannot block.
func (h *Health) publishLocked(s *hservice) {
	out := h.filterLocked(s, s.base)
	if slices.Equal(out, s.pushed) {
		return
	}
	s.pushed = out
	for w := range s.subs {
		select {
		case <-w.ch:
		default:
		}
		w.ch <- out
	}
}
