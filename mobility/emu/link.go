package emu

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/roamnet/roam/mobility/trace"
)

// LinkConfig sets the properties of one direction of a path. The zero
// value is a perfect link: no delay, no loss, unlimited rate.
type LinkConfig struct {
	// Delay is the one-way propagation delay.
	Delay time.Duration
	// Jitter spreads the delay uniformly over [Delay-Jitter, Delay+Jitter]
	// (never below zero). Datagrams still leave in order unless Reorder
	// says otherwise, so jitter raises the mean delay a little, as on a
	// real path, where a datagram cannot overtake the one before it.
	Jitter time.Duration
	// Loss is the chance that a datagram is lost, independently of others.
	Loss float64
	// Burst adds bursty loss on top of Loss.
	Burst Burst
	// Reorder is the chance that a datagram skips the delay and so
	// overtakes those in flight, as netem's reorder does. Zero keeps order.
	Reorder float64
	// Rate is the bottleneck's rate in bit/s. If zero, the rate is
	// unlimited and there is no queue.
	Rate int64
	// Queue bounds the drop-tail queue in front of the bottleneck, in
	// bytes. If zero, it holds 100 ms at Rate, and at least 64 KiB. A
	// datagram that does not fit is dropped; those that fit wait, so
	// queueing delay appears as on a real bottleneck.
	Queue int
}

// Burst is a Gilbert–Elliott model of bursty loss (E. N. Gilbert, "Capacity
// of a burst-noise channel", Bell System Technical Journal 39, 1960; E. O.
// Elliott, "Estimates of error rates for codes on burst-noise channels",
// BSTJ 42, 1963): the link is good or bad; in the bad state it loses each
// datagram with chance Loss. The long-run share of time in the bad state
// is Enter/(Enter+Exit), and a burst lasts 1/Exit datagrams on average.
type Burst struct {
	Enter float64 // chance per datagram to go from good to bad; zero disables bursts
	Exit  float64 // chance per datagram to go from bad to good; zero means 1
	Loss  float64 // loss in the bad state; zero means 1
}

// DropReason says why a datagram was dropped.
type DropReason uint8

// The reasons for a drop.
const (
	NotDropped   DropReason = iota
	DropLoss                // random loss (LinkConfig.Loss)
	DropBurst               // bursty loss (LinkConfig.Burst)
	DropQueue               // the bottleneck's queue was full
	DropBlackout            // in a blackout or handover outage, or in flight when one began
	DropHook                // the Hook said so
	DropStale               // sent to an address no longer in use: an old mapping or server address
	DropFiltered            // sent to a client's mapping by someone other than the server
	DropClosed              // the path or the receiver was closed
	numDropReasons
)

var dropNames = [...]string{"none", "loss", "burst", "queue", "blackout", "hook", "stale", "filtered", "closed"}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "DropReason(?)"
}

// LinkStats counts what a direction did with the datagrams offered to it.
type LinkStats struct {
	Forwarded uint64 // datagrams admitted (they may still be dropped in flight by a blackout)
	Bytes     uint64 // bytes admitted
	// Offered is every byte offered to the model, admitted or dropped by
	// it: what the sender put on the link, the figure to divide by what
	// arrived for the price of a protocol's retransmissions and
	// redundancy.
	Offered uint64
	Dropped map[DropReason]uint64
}

// Link is the model of one direction of a path, shared by both forms of
// the emulator. It is a pure function of its configuration, its seeded
// random source and the times and sizes of the datagrams offered to it:
// Admit says when each one comes out, or why it is dropped. It holds no
// datagrams and starts no timers; the forms do the waiting.
type Link struct {
	mu   sync.Mutex
	cfg  LinkConfig
	rng  *rand.Rand
	bad  bool      // Gilbert–Elliott state
	busy time.Time // when the bottleneck will have sent all it holds
	last time.Time // the latest exit time handed out, so datagrams stay in order
	dark time.Time // the end of the current blackout
	st   LinkStats
}

// NewLink returns a Link with its own random source seeded by seed.
func NewLink(cfg LinkConfig, seed uint64) *Link {
	return &Link{
		cfg: cfg,
		rng: rand.New(rand.NewPCG(seed, 0x656d752d6c696e6b)), // "emu-link"
		st:  LinkStats{Dropped: map[DropReason]uint64{}},
	}
}

// Set changes the configuration from now on. Datagrams already admitted
// keep their exit times, and the queue keeps what it holds.
func (l *Link) Set(cfg LinkConfig) {
	l.mu.Lock()
	l.cfg = cfg
	l.mu.Unlock()
}

// Config returns the current configuration.
func (l *Link) Config() LinkConfig {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg
}

// Stats returns a copy of the link's counters.
func (l *Link) Stats() LinkStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.st
	st.Dropped = make(map[DropReason]uint64, len(l.st.Dropped))
	for k, v := range l.st.Dropped {
		st.Dropped[k] = v
	}
	return st
}

// Blackout drops every datagram offered from now until now+d. It also
// empties the queue; the form that holds datagrams in flight drops them.
func (l *Link) Blackout(now time.Time, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if end := now.Add(d); end.After(l.dark) {
		l.dark = end
	}
	l.busy, l.last = now, now
}

// Admit offers a datagram of size bytes to the link at time now. It
// returns when the datagram leaves the link, or the reason it is dropped.
// Callers must offer datagrams with non-decreasing now.
func (l *Link) Admit(now time.Time, size int) (time.Time, DropReason) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, why := l.admit(now, size)
	l.st.Offered += uint64(size)
	if why != NotDropped {
		l.st.Dropped[why]++
	} else {
		l.st.Forwarded++
		l.st.Bytes += uint64(size)
	}
	return at, why
}

// count records a drop decided outside the model (hooks, stale addresses,
// datagrams in flight when a blackout began).
func (l *Link) count(why DropReason) {
	l.mu.Lock()
	l.st.Dropped[why]++
	l.mu.Unlock()
}

func (l *Link) admit(now time.Time, size int) (time.Time, DropReason) {
	c := &l.cfg
	if now.Before(l.dark) {
		return time.Time{}, DropBlackout
	}
	// The bottleneck: a virtual drop-tail queue. What it holds is the time
	// it still needs to send it, times the rate; no datagram is stored.
	exit := now
	if c.Rate > 0 {
		if l.busy.After(now) {
			backlog := float64(l.busy.Sub(now)) * float64(c.Rate) / 8e9
			if backlog+float64(size) > float64(queueLimit(c)) {
				return time.Time{}, DropQueue
			}
			exit = l.busy
		}
		exit = exit.Add(time.Duration(int64(size) * 8e9 / c.Rate))
		l.busy = exit
	}
	// Losses on the wire, after the bottleneck: a lost datagram has used
	// its share of the rate, as a corrupted frame has used its air time.
	if c.Loss > 0 && l.rng.Float64() < c.Loss {
		return time.Time{}, DropLoss
	}
	if c.Burst.Enter > 0 {
		bad := l.bad
		exitP := orOne(c.Burst.Exit)
		if l.bad {
			l.bad = l.rng.Float64() >= exitP
		} else {
			l.bad = l.rng.Float64() < c.Burst.Enter
		}
		if bad && l.rng.Float64() < orOne(c.Burst.Loss) {
			return time.Time{}, DropBurst
		}
	}
	if c.Reorder > 0 && l.rng.Float64() < c.Reorder {
		return exit, NotDropped // skips the delay and the in-order rule
	}
	delay := c.Delay
	if c.Jitter > 0 {
		delay += time.Duration((l.rng.Float64()*2 - 1) * float64(c.Jitter))
		delay = max(delay, 0)
	}
	at := exit.Add(delay)
	if at.Before(l.last) {
		at = l.last
	}
	l.last = at
	return at, NotDropped
}

func queueLimit(c *LinkConfig) int {
	if c.Queue > 0 {
		return c.Queue
	}
	return max(64<<10, int(c.Rate/8/10))
}

func orOne(p float64) float64 {
	if p == 0 {
		return 1
	}
	return p
}

// LinkConfigOf turns the path-wide figures of a trace into the
// configuration of one direction: half the RTT, half the jitter, and the
// rest as given.
func LinkConfigOf(l trace.Link) LinkConfig {
	return LinkConfig{
		Delay:   l.RTT / 2,
		Jitter:  l.Jitter / 2,
		Loss:    l.Loss,
		Burst:   Burst{Enter: l.BurstEnter, Exit: l.BurstExit, Loss: l.BurstLoss},
		Reorder: l.Reorder,
		Rate:    l.Rate,
		Queue:   l.QueueBytes,
	}
}
