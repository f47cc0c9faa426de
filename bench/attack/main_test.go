package main

import (
	"cmp"
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	if os.Getenv(victimEnv) != "" {
		runVictim() // the test binary is the host target's victim too
	}
	os.Exit(m.Run())
}

// TestHostAttacksLeaveHonestFlowsExact runs every attack on a Host briefly
// and checks what does not depend on the machine's speed: every honest
// echo comes back byte-exact (a corrupted one is an error, not a slow
// one), the victim's live heap stays bounded, and it comes back to its
// baseline. The throughput targets are ratios; the command reports them.
func TestHostAttacksLeaveHonestFlowsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("runs each attack for a second")
	}
	o := &options{quick: true, duration: time.Second, calm: time.Second, recover: 30 * time.Second}
	for _, a := range (hostTarget{}).attacks(o) {
		t.Run(a.name, func(t *testing.T) {
			res, err := runAttack(context.Background(), hostTarget{}, a, o)
			require.NoError(t, err)
			for _, err := range []error{res.calm.firstErr, res.during.firstErr, res.honestAfterFailure} {
				if err != nil {
					require.NotContains(t, err.Error(), "corrupted")
				}
			}
			require.Positive(t, res.during.ok, "the honest client got through")
			require.Less(t, res.peak.heapLive, cmp.Or(a.maxHeap, 256<<20))
			// Goroutines come back exactly. The heap's allowance for the
			// runtime's goroutine records rests on a peak sampled every
			// 5 ms, which a burst (each flow's header served by a goroutine
			// of its own, under the race detector's pace) can outrun: allow
			// twice as many records here; the command keeps the strict one.
			require.LessOrEqual(t, float64(res.after.goroutines), 1.1*float64(res.base.goroutines)+5, "goroutines back")
			records := 2 * goroutineRecord * max(0, res.after.peakGoroutines-res.base.peakGoroutines)
			require.LessOrEqual(t, res.after.heapLive, uint64(1.1*float64(res.base.heapLive))+256<<10+uint64(records),
				"live heap back: %+v, base %+v", res.after, res.base)
			require.Empty(t, res.outcome.missed)
		})
	}
}
