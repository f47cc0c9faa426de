package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	if os.Getenv(victimEnv) != "" {
		runVictim() // the test binary is the victim's too
	}
	os.Exit(m.Run())
}

// TestAttacksLeaveHonestFlowsExact runs every attack briefly and checks
// what does not depend on the machine's speed: the honest client's data
// comes back byte-exact (a corrupted echo is an error, not a slow one),
// the victim's heap stays bounded and it comes back to its baseline. The
// throughput targets are ratios; the command reports them.
func TestAttacksLeaveHonestFlowsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("runs each attack for a second")
	}
	for _, a := range hostAttacks {
		t.Run(a.name, func(t *testing.T) {
			r, err := runHostAttack(a, time.Second, time.Second)
			require.NoError(t, err)
			require.NotContains(t, r.lastErr, "corrupted")
			require.Positive(t, r.echoes, "the honest client got through")
			require.Less(t, r.peakHeap, uint64(2*defaultHostBuffer))
			require.GreaterOrEqual(t, r.recovered, time.Duration(0), "back to the baseline within %v (ended at %d bytes, %d goroutines)", recoverWait, r.endHeap, r.endGoroutines)
			if strings.Contains(a.name, "12,000") {
				var opened, accepted, refused int
				_, err := fmt.Sscanf(r.note, "%d opened, %d accepted, %d refused", &opened, &accepted, &refused)
				require.NoError(t, err)
				require.LessOrEqual(t, accepted, 4096, "MaxFlowsPerConn holds")
			}
		})
	}
}
