package resolve

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/roamnet/roam/resolve/internal/shrink"
)

// Probe scheduling. One goroutine per Health starts every probe, at most
// Concurrency at once, each in a goroutine of its own that ends with it:
// a registered endpoint costs a small record, not a goroutine, so a flood
// of registrations cannot make the registry hold one goroutine each.
//
// Endpoints that never answered a probe must not starve those that do. A
// flood of registrations at addresses that never answer once kept a
// crashed provider in answers for 87 s: 3,000 dead endpoints, probed 64 at
// a time with 1 s timeouts, queued its probes behind theirs. So:
//
//   - an endpoint that has answered (answered) goes first, and its probe
//     gets a deadline from its own RTT (3(SRTT+4RTTVAR), at least
//     minProbeTimeout) rather than the full Timeout, so that its probes
//     are short even when it has just died;
//   - the endpoints that never answered hold at most half the slots, and
//     once down they are probed ever less often (up to every 16
//     intervals);
//   - within each class, the keys that registered the endpoints take
//     turns, and each key has at most a quarter of the slots in flight: a
//     key that registered many endpoints waits for the others. At a
//     registry the turns go by the address that registered (chargeTo),
//     since fresh keys cost an attacker nothing.
//
// All of this state is guarded by Health.mu.

// minProbeTimeout is the shortest deadline a probe gets, however short its
// endpoint's RTT: enough for a loaded machine to schedule the prober, and
// for a re-dial on loopback.
const minProbeTimeout = 200 * time.Millisecond

// maxBackoffShift caps the slowing down of probes to an endpoint that
// never answered and is down: every 2^4 = 16 intervals at most.
const maxBackoffShift = 4

type probeClass uint8

const (
	classAnswered probeClass = iota // has answered a probe: goes first
	classUnproven                   // never answered: at most half the slots
)

// fairKey is whom an endpoint's probes are charged to: the address that
// registered it, when a registry says; else the key that the endpoint
// pins, or its service when it pins none.
type fairKey struct {
	from    netip.Addr
	key     Fingerprint
	service string
}

type hendpoint struct {
	ep       Endpoint
	svc      *hservice
	fair     fairKey
	up       bool
	answered bool // a probe succeeded once
	fails    int
	rtt      time.Duration // of the last successful probe
	srtt     time.Duration // smoothed, as TCP does (RFC 6298)
	rttvar   time.Duration
	err      error
	checked  time.Time

	next    time.Time          // when the next probe is due
	heapIdx int                // in scheduler.due, or -1
	stop    context.CancelFunc // ends the running probe; nil when none runs
	gone    bool               // withdrawn, or its service stopped
}

func (e *hendpoint) class() probeClass {
	if e.answered {
		return classAnswered
	}
	return classUnproven
}

func (e *hendpoint) observeRTT(rtt time.Duration) {
	if e.srtt == 0 {
		e.srtt, e.rttvar = rtt, rtt/2
		return
	}
	d := e.srtt - rtt
	if d < 0 {
		d = -d
	}
	e.rttvar = (3*e.rttvar + d) / 4
	e.srtt = (7*e.srtt + rtt) / 8
}

// probeTimeout is the deadline of e's next probe: the full Timeout until
// it has answered, then a few of its round trips.
func (h *Health) probeTimeout(e *hendpoint) time.Duration {
	if !e.answered {
		return h.timeout
	}
	return min(h.timeout, max(minProbeTimeout, 3*(e.srtt+4*e.rttvar)))
}

// scheduler is a Health's probe queue.
type scheduler struct {
	running  bool
	wake     chan struct{}
	due      dueHeap         // endpoints waiting for their time
	ready    [2]fairQueue    // endpoints whose time has come, by class
	inFlight [2]int          // probes running, by class
	perKey   map[fairKey]int // probes running, by key
	unwatch  []func()        // the wrapped resolver's watches of stopped services, to end without Health.mu
}

// newEndpointLocked makes the record of a new endpoint of s and schedules
// its first probe at a random point of the first interval, which spreads
// endpoints that appeared together. h.mu must be held.
func (h *Health) newEndpointLocked(s *hservice, ep Endpoint) *hendpoint {
	e := &hendpoint{ep: ep, svc: s, up: true, heapIdx: -1}
	switch from, ok := h.registrant(s.key, ep.Addr); {
	case ok:
		e.fair = fairKey{from: from}
	case !ep.Key.IsZero():
		e.fair = fairKey{key: ep.Key}
	default:
		e.fair = fairKey{service: s.key}
	}
	e.next = time.Now().Add(rand.N(h.interval))
	heap.Push(&h.sched.due, e)
	h.kick()
	return e
}

func (h *Health) registrant(service string, addr netip.AddrPort) (netip.Addr, bool) {
	if h.chargeTo == nil {
		return netip.Addr{}, false
	}
	return h.chargeTo(service, addr)
}

// forgetLocked stops probing e. A probe in flight is cancelled; one
// waiting in a ready queue is skipped when its turn comes. h.mu must be
// held.
func (h *Health) forgetLocked(e *hendpoint) {
	e.gone = true
	if e.heapIdx >= 0 {
		heap.Remove(&h.sched.due, e.heapIdx)
	}
	if e.stop != nil {
		e.stop()
	}
}

func (h *Health) startSchedulerLocked() {
	if h.sched.running || h.closed {
		return
	}
	h.sched.running = true
	h.wg.Add(1)
	go h.schedule()
}

// kick wakes the scheduler.
func (h *Health) kick() {
	select {
	case h.sched.wake <- struct{}{}:
	default:
	}
}

// schedule starts the probes that are due, as slots allow, and stops the
// services that went idle, until the Health is closed.
func (h *Health) schedule() {
	defer h.wg.Done()
	timer := time.NewTimer(h.interval)
	defer timer.Stop()
	nextSweep := time.Now().Add(h.interval)
	for {
		h.mu.Lock()
		now := time.Now()
		if !now.Before(nextSweep) {
			h.sweepIdleLocked(now)
			nextSweep = now.Add(h.interval)
		}
		wait := h.dispatchLocked(now)
		unwatch := h.sched.unwatch
		h.sched.unwatch = nil
		h.mu.Unlock()
		for _, end := range unwatch {
			end()
		}
		timer.Reset(min(wait, time.Until(nextSweep)))
		select {
		case <-h.ctx.Done():
			return
		case <-h.sched.wake:
		case <-timer.C:
		}
	}
}

// dispatchLocked moves the endpoints whose time has come to the ready
// queues and starts what the slots allow; it returns how long until the
// next endpoint is due. h.mu must be held.
func (h *Health) dispatchLocked(now time.Time) time.Duration {
	q := &h.sched
	for len(q.due) > 0 && !q.due[0].next.After(now) {
		e := heap.Pop(&q.due).(*hendpoint)
		q.ready[e.class()].push(e)
	}
	keyFree := func(k fairKey) bool { return q.perKey[k] < h.keyBudget }
	for q.inFlight[classAnswered]+q.inFlight[classUnproven] < h.concurrency {
		e := q.ready[classAnswered].pop(keyFree)
		if e == nil && q.inFlight[classUnproven] < h.unprovenSlots {
			e = q.ready[classUnproven].pop(keyFree)
		}
		if e == nil {
			break
		}
		h.startProbeLocked(e, now)
	}
	if len(q.due) == 0 {
		return h.interval
	}
	return q.due[0].next.Sub(now)
}

// startProbeLocked probes e in a goroutine of its own. h.mu must be held.
func (h *Health) startProbeLocked(e *hendpoint, now time.Time) {
	q := &h.sched
	class := e.class()
	q.inFlight[class]++
	q.perKey[e.fair]++
	step := h.interval - rand.N(h.interval/10+1)
	if !e.answered && !e.up {
		// Never answered and down: most likely an address nothing
		// listens at. Probe it less and less often.
		step = h.interval << min(e.fails-h.failures+1, maxBackoffShift)
	}
	// From its due time, so that probes start at most Interval apart
	// whatever they take (a vanished endpoint is down within
	// Interval*Failures + its deadline); finishProbe moves a late one.
	e.next = e.next.Add(step)
	ctx, cancel := context.WithTimeout(e.svc.ctx, h.probeTimeout(e))
	e.stop = cancel
	ep, service := e.ep, e.svc.key
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		start := time.Now()
		err := h.p.Probe(ctx, service, ep)
		rtt := time.Since(start)
		cancelled := ctx.Err() == context.Canceled
		cancel()
		h.finishProbe(e, class, rtt, err, cancelled)
	}()
}

// finishProbe records a probe's outcome and puts e back in line.
func (h *Health) finishProbe(e *hendpoint, class probeClass, rtt time.Duration, err error, cancelled bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := &h.sched
	q.inFlight[class]--
	if q.perKey[e.fair]--; q.perKey[e.fair] <= 0 {
		delete(q.perKey, e.fair)
	}
	e.stop = nil
	h.kick() // a slot is free
	if e.gone || h.closed || cancelled {
		return // withdrawn meanwhile: its outcome means nothing
	}
	h.recordLocked(e.svc, e, rtt, err)
	// A probe that overran its slot delays the next one rather than
	// making a burst to catch up.
	if now := time.Now(); e.next.Before(now) {
		e.next = now
	}
	heap.Push(&q.due, e)
}

// dueHeap orders endpoints by when their next probe is due.
type dueHeap []*hendpoint

func (d dueHeap) Len() int           { return len(d) }
func (d dueHeap) Less(i, j int) bool { return d[i].next.Before(d[j].next) }
func (d dueHeap) Swap(i, j int) {
	d[i], d[j] = d[j], d[i]
	d[i].heapIdx, d[j].heapIdx = i, j
}
func (d *dueHeap) Push(x any) {
	e := x.(*hendpoint)
	e.heapIdx = len(*d)
	*d = append(*d, e)
}
func (d *dueHeap) Pop() any {
	old := *d
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*d = old[:len(old)-1]
	if cap(old) >= shrink.MinPeak && len(*d) <= cap(old)/8 {
		*d = append(dueHeap(nil), *d...) // give a flood's memory back
	}
	e.heapIdx = -1
	return e
}

// fairQueue holds the endpoints whose probe is due, one line per key, and
// serves the keys in turn.
type fairQueue struct {
	turns     []fairKey                // keys with endpoints waiting, in turn order
	lines     map[fairKey][]*hendpoint // each key's endpoints, oldest first
	linesPeak int                      // for shrink.Delete
}

func (q *fairQueue) push(e *hendpoint) {
	if q.lines == nil {
		q.lines = make(map[fairKey][]*hendpoint)
	}
	line := q.lines[e.fair]
	if len(line) == 0 {
		q.turns = append(q.turns, e.fair)
	}
	q.lines[e.fair] = append(line, e)
}

// pop returns the next endpoint of the first key in turn that may start a
// probe, and sends that key to the back of the line; nil when none may.
// Endpoints forgotten while they waited are dropped on the way.
func (q *fairQueue) pop(may func(fairKey) bool) *hendpoint {
	for range len(q.turns) {
		k := q.turns[0]
		q.turns = q.turns[1:]
		line := q.lines[k]
		for len(line) > 0 && line[0].gone {
			line[0] = nil
			line = line[1:]
		}
		if len(line) == 0 {
			shrink.Delete(&q.lines, k, &q.linesPeak)
			continue
		}
		if !may(k) {
			q.lines[k] = line
			q.turns = append(q.turns, k)
			continue
		}
		e := line[0]
		line[0] = nil
		if line = line[1:]; len(line) == 0 {
			shrink.Delete(&q.lines, k, &q.linesPeak)
		} else {
			q.lines[k] = line
			q.turns = append(q.turns, k)
		}
		return e
	}
	return nil
}
