package emu

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func TestLinkPerfect(t *testing.T) {
	l := NewLink(LinkConfig{}, 1)
	for i := range 1000 {
		now := t0.Add(time.Duration(i) * time.Microsecond)
		at, why := l.Admit(now, 1200)
		require.Equal(t, NotDropped, why)
		require.Equal(t, now, at)
	}
	require.Equal(t, uint64(1000), l.Stats().Forwarded)
}

func TestLinkDelay(t *testing.T) {
	l := NewLink(LinkConfig{Delay: 37 * time.Millisecond}, 1)
	at, why := l.Admit(t0, 100)
	require.Equal(t, NotDropped, why)
	require.Equal(t, 37*time.Millisecond, at.Sub(t0))
}

// TestLinkJitter checks that jitter stays within its bounds, keeps order,
// and leaves the mean delay within 1 ms of the setting.
func TestLinkJitter(t *testing.T) {
	const delay, jitter = 40 * time.Millisecond, 10 * time.Millisecond
	l := NewLink(LinkConfig{Delay: delay, Jitter: jitter}, 7)
	var sum time.Duration
	var last time.Time
	const n = 10000
	for i := range n {
		// Sparse enough that order never binds; in dense streams it
		// raises the mean, as documented.
		now := t0.Add(time.Duration(i) * 2 * jitter)
		at, _ := l.Admit(now, 100)
		d := at.Sub(now)
		require.GreaterOrEqual(t, d, delay-jitter)
		require.LessOrEqual(t, d, delay+jitter)
		require.False(t, at.Before(last), "reordered without Reorder")
		last = at
		sum += d
	}
	require.InDelta(t, float64(delay), float64(sum/n), float64(time.Millisecond))
}

func TestLinkReorder(t *testing.T) {
	l := NewLink(LinkConfig{Delay: 20 * time.Millisecond, Reorder: 0.25}, 3)
	var last time.Time
	overtakes := 0
	for i := range 4000 {
		at, _ := l.Admit(t0.Add(time.Duration(i)*time.Millisecond), 100)
		if at.Before(last) {
			overtakes++ // compared with the latest exit so far
		} else {
			last = at
		}
	}
	require.InDelta(t, 1000, overtakes, 5*math.Sqrt(4000*0.25*0.75))
}

// bounds is five standard deviations of a binomial count around its mean.
func bounds(n int, p float64) (lo, hi float64) {
	mean, sd := float64(n)*p, math.Sqrt(float64(n)*p*(1-p))
	return mean - 5*sd, mean + 5*sd
}

func TestLinkLossRate(t *testing.T) {
	for _, p := range []float64{0.001, 0.01, 0.1, 0.5} {
		for seed := range uint64(5) {
			l := NewLink(LinkConfig{Loss: p}, seed)
			const n = 100_000
			lost := 0
			for i := range n {
				if _, why := l.Admit(t0.Add(time.Duration(i)), 1000); why == DropLoss {
					lost++
				}
			}
			lo, hi := bounds(n, p)
			require.True(t, float64(lost) >= lo && float64(lost) <= hi,
				"loss %v seed %d: %d lost of %d, want %.0f to %.0f", p, seed, lost, n, lo, hi)
			require.Equal(t, uint64(lost), l.Stats().Dropped[DropLoss])
		}
	}
}

// TestLinkBurstLoss checks the Gilbert–Elliott model against its
// stationary figures: share of loss p/(p+r), mean burst 1/r.
func TestLinkBurstLoss(t *testing.T) {
	const enter, exit = 0.01, 0.25
	l := NewLink(LinkConfig{Burst: Burst{Enter: enter, Exit: exit}}, 11)
	const n = 400_000
	lost, bursts, run := 0, 0, 0
	for i := range n {
		_, why := l.Admit(t0.Add(time.Duration(i)), 1000)
		if why == DropBurst {
			lost++
			if run == 0 {
				bursts++
			}
			run++
		} else {
			run = 0
		}
	}
	share := enter / (enter + exit)
	require.InEpsilon(t, share, float64(lost)/n, 0.05, "loss share")
	require.InEpsilon(t, 1/exit, float64(lost)/float64(bursts), 0.05, "mean burst length")
}

// TestLinkRate offers twice the rate for ten seconds and checks that the
// link carries its rate within 5% and that queueing delay builds up to
// what the queue holds.
func TestLinkRate(t *testing.T) {
	const rate = 8_000_000 // 1 MB/s
	const size = 1000
	const queue = 100_000 // 100 ms at the rate
	l := NewLink(LinkConfig{Rate: rate, Queue: queue}, 1)
	var bytes int
	var lastExit time.Time
	var maxDelay time.Duration
	for i := range 20_000 { // 2 MB/s for 10 s
		now := t0.Add(time.Duration(i) * 500 * time.Microsecond)
		at, why := l.Admit(now, size)
		if why == DropQueue {
			continue
		}
		require.Equal(t, NotDropped, why)
		bytes += size
		lastExit = at
		maxDelay = max(maxDelay, at.Sub(now))
	}
	got := float64(bytes*8) / lastExit.Sub(t0).Seconds()
	require.InEpsilon(t, rate, got, 0.05, "rate: got %.0f bit/s", got)
	require.InDelta(t, float64(100*time.Millisecond), float64(maxDelay), float64(2*time.Millisecond), "queueing delay")
	require.Greater(t, l.Stats().Dropped[DropQueue], uint64(9000))
}

func TestLinkQueueingDelayEmerges(t *testing.T) {
	// A burst of 10 datagrams into an idle 8 Mbit/s link: each waits for
	// those ahead, 1 ms per 1000 bytes.
	l := NewLink(LinkConfig{Rate: 8_000_000, Delay: 5 * time.Millisecond}, 1)
	for i := range 10 {
		at, why := l.Admit(t0, 1000)
		require.Equal(t, NotDropped, why)
		require.Equal(t, time.Duration(i+1)*time.Millisecond+5*time.Millisecond, at.Sub(t0))
	}
}

func TestLinkDefaultQueue(t *testing.T) {
	c := LinkConfig{Rate: 100_000_000}
	require.Equal(t, 1_250_000, queueLimit(&c), "100 ms at the rate")
	c.Rate = 1_000_000
	require.Equal(t, 64<<10, queueLimit(&c), "at least 64 KiB")
}

func TestLinkBlackout(t *testing.T) {
	l := NewLink(LinkConfig{Delay: 10 * time.Millisecond}, 1)
	l.Blackout(t0, time.Second)
	_, why := l.Admit(t0, 100)
	require.Equal(t, DropBlackout, why)
	_, why = l.Admit(t0.Add(999*time.Millisecond), 100)
	require.Equal(t, DropBlackout, why)
	at, why := l.Admit(t0.Add(time.Second), 100)
	require.Equal(t, NotDropped, why)
	require.Equal(t, time.Second+10*time.Millisecond, at.Sub(t0))
}

func TestLinkDeterministic(t *testing.T) {
	cfg := LinkConfig{Delay: 30 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.05,
		Burst: Burst{Enter: 0.01, Exit: 0.3}, Reorder: 0.01, Rate: 10_000_000}
	run := func(seed uint64) []time.Time {
		l := NewLink(cfg, seed)
		var out []time.Time
		for i := range 5000 {
			at, why := l.Admit(t0.Add(time.Duration(i)*time.Millisecond), 900+i%500)
			out = append(out, at.Add(time.Duration(why)))
		}
		return out
	}
	require.Equal(t, run(42), run(42))
	require.NotEqual(t, run(42), run(43))
}

func TestDropReasonString(t *testing.T) {
	require.Equal(t, "blackout", DropBlackout.String())
	require.Equal(t, "DropReason(?)", DropReason(200).String())
}

// TestLinkOffered counts every byte offered, whether the model admits it
// or drops it: what a sender spent on the link.
func TestLinkOffered(t *testing.T) {
	l := NewLink(LinkConfig{Loss: 0.5}, 1)
	l.Blackout(t0, time.Second)
	_, why := l.Admit(t0, 500)
	require.Equal(t, DropBlackout, why)
	for i := range 100 {
		l.Admit(t0.Add(time.Second+time.Duration(i)*time.Millisecond), 1000)
	}
	st := l.Stats()
	require.Equal(t, uint64(100_500), st.Offered)
	require.Equal(t, st.Forwarded*1000, st.Bytes)
	require.Less(t, st.Bytes, st.Offered-500, "lost datagrams are offered, not admitted")
}
