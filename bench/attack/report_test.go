package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The report fails a run on what CI can rely on (an honest failure, the
// heap cap, no recovery) and only notes throughput, which a loaded
// machine moves.
func TestReportVerdicts(t *testing.T) {
	o := &options{duration: time.Second, calm: time.Second, maxHeap: 256 << 20}
	calm := roundStats{ok: 100, elapsed: time.Second}
	ok := result{
		attack: attack{name: "fine"}, calm: calm,
		during: roundStats{ok: 60, elapsed: time.Second},
		base:   sample{goroutines: 10, heapLive: 1 << 20}, peak: sample{goroutines: 50, heapLive: 20 << 20},
		after: sample{goroutines: 10, heapLive: 1 << 20}, recoveredOK: true, recovered: time.Second,
	}
	slow := ok
	slow.attack.name, slow.during.ok = "slow", 10
	held := ok
	held.attack = attack{name: "held", holds: "names"}
	held.recoveredOK = false

	var out strings.Builder
	require.False(t, report(&out, "registry", []result{ok, slow, held}, o))
	require.Contains(t, out.String(), "| fine |")
	require.Contains(t, out.String(), "**slow** missed: honest throughput 10% of calm (target 50%)")
	require.Contains(t, out.String(), "holds names")

	for _, bad := range []func(*result){
		func(r *result) { r.during.failed, r.during.firstErr = 1, errors.New("refused") },
		func(r *result) { r.peak.heapLive = 300 << 20 },
		func(r *result) { r.recoveredOK = false },
		func(r *result) { r.outcome.missed = "crashed provider answered for 9 s" },
	} {
		r := ok
		bad(&r)
		out.Reset()
		require.True(t, report(&out, "registry", []result{r}, o), out.String())
	}
}
