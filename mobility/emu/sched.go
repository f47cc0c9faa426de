package emu

import (
	"sync"
	"time"
)

// sched holds the datagrams of one direction until their exit times and
// hands them to deliver in exit order (ties in arrival order). It runs on
// a single time.AfterFunc timer and keeps no goroutine of its own: inside
// a testing/synctest bubble it waits in virtual time, and once closed
// nothing of it is left running.
type sched[T any] struct {
	deliver func(T)
	discard func(T, DropReason) // flushed or closed
	// fine, if set, makes the scheduler precise on real time. Go's timers
	// wake up to a millisecond or so late on Linux, as the netpoller
	// sleeps in whole milliseconds; so the timer is set early by early,
	// and fine sleeps the rest of the wait. Virtual time needs neither:
	// its timers are exact, and a sleeping system call would stall it.
	fine  func(time.Duration)
	early time.Duration

	mu       sync.Mutex
	idle     sync.Cond // signalled when a drain ends
	heap     []entry[T]
	seq      uint64
	timer    *time.Timer
	armed    time.Time // when the timer fires; zero if it is not set
	draining bool
	closed   bool
}

type entry[T any] struct {
	at  time.Time
	seq uint64
	v   T
}

func newSched[T any](deliver func(T), discard func(T, DropReason)) *sched[T] {
	s := &sched[T]{deliver: deliver, discard: discard}
	s.idle.L = &s.mu
	return s
}

// submit queues v for time at. If v is due now and nothing is ahead of
// it, submit queues nothing and reports true: the caller delivers v
// itself, which spares the timer on an unshaped path.
func (s *sched[T]) submit(now, at time.Time, v T) (inline bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.discard(v, DropClosed)
		return false
	}
	if !at.After(now) && !s.draining && (len(s.heap) == 0 || at.Before(s.heap[0].at)) {
		s.mu.Unlock()
		return true
	}
	s.push(entry[T]{at: at, seq: s.seq, v: v})
	s.seq++
	if !s.draining && (s.armed.IsZero() || at.Before(s.armed)) {
		s.arm(at.Sub(now) - s.early)
		s.armed = at
	}
	s.mu.Unlock()
	return false
}

// due reports whether a datagram that leaves at at may be delivered now,
// ahead of nothing, by its caller; the relay uses it to skip copying.
func (s *sched[T]) due(now, at time.Time) bool {
	if at.After(now) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && !s.draining && (len(s.heap) == 0 || at.Before(s.heap[0].at))
}

func (s *sched[T]) arm(d time.Duration) {
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.fire)
	} else {
		s.timer.Reset(d)
	}
}

// fire delivers every due datagram, then sets the timer for the next one.
func (s *sched[T]) fire() {
	s.mu.Lock()
	if s.draining || s.closed {
		// The running drain sees what is due, and re-arms when it ends.
		s.mu.Unlock()
		return
	}
	s.draining = true
	s.armed = time.Time{}
	for len(s.heap) > 0 && !s.closed {
		if wait := time.Until(s.heap[0].at); wait > 0 {
			if s.fine == nil || wait > s.early {
				s.armed = s.heap[0].at
				s.arm(wait - s.early)
				break
			}
			// Later datagrams queue meanwhile; earlier ones (reordered)
			// wait at most early.
			s.mu.Unlock()
			s.fine(wait)
			s.mu.Lock()
			continue
		}
		e := s.pop()
		s.mu.Unlock()
		s.deliver(e.v) // without the lock: deliver may send into another path
		s.mu.Lock()
	}
	s.draining = false
	s.idle.Broadcast()
	s.mu.Unlock()
}

// flush drops everything held, for a blackout.
func (s *sched[T]) flush() {
	s.mu.Lock()
	held := s.heap
	s.heap = nil
	s.mu.Unlock()
	for _, e := range held {
		s.discard(e.v, DropBlackout)
	}
}

// close drops everything held, stops the timer and waits for a running
// drain to end, so that no goroutine of the scheduler outlives it.
func (s *sched[T]) close() {
	s.mu.Lock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	for s.draining {
		s.idle.Wait()
	}
	held := s.heap
	s.heap = nil
	s.mu.Unlock()
	for _, e := range held {
		s.discard(e.v, DropClosed)
	}
}

func (s *sched[T]) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heap)
}

func (e *entry[T]) before(o *entry[T]) bool {
	return e.at.Before(o.at) || e.at.Equal(o.at) && e.seq < o.seq
}

// push and pop keep s.heap a binary min-heap; container/heap would box
// every entry in an interface.
func (s *sched[T]) push(e entry[T]) {
	h := append(s.heap, e)
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].before(&h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	s.heap = h
}

func (s *sched[T]) pop() entry[T] {
	h := s.heap
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	var zero entry[T]
	h[n] = zero // let the payload go
	h = h[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && h[l].before(&h[m]) {
			m = l
		}
		if r < n && h[r].before(&h[m]) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	s.heap = h
	return top
}
