package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	"github.com/roamnet/roam/mobility/trace"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shortRide is hsr-300 compressed into 5 s: two handovers into cells of
// other RTTs, rates and losses, and a short tunnel.
const shortRide = `
0.000 link rtt_ms=40 jitter_ms=6 loss=0.01 rate_mbps=10
1.000 handover outage_ms=150
1.150 link rtt_ms=60 jitter_ms=9 loss=0.02 rate_mbps=5
2.500 handover outage_ms=100
2.600 link rtt_ms=30 jitter_ms=4 loss=0.005 rate_mbps=20
3.500 blackout duration_ms=400
5.000 end
`

// TestRide rides the short trace in real time and checks roam's promise:
// every byte once, in order, both ways, with no application error.
func TestRide(t *testing.T) {
	tr, err := trace.ParseString(shortRide)
	require.NoError(t, err)
	var statuses []status
	s, err := run(t.Context(), config{
		Trace: tr, TraceName: "short", Duration: 5 * time.Second, Seed: 7, UpRate: defaultUpRate,
		Status: func(st status) { statuses = append(statuses, st) },
	})
	require.NoError(t, err)
	t.Logf("%+v", *s)

	require.Positive(t, s.BytesDown)
	require.Positive(t, s.BytesUp)
	require.Equal(t, s.BytesDown+s.BytesUp, s.BytesVerified)
	require.Zero(t, s.BytesLost)
	require.Zero(t, s.BytesDuplicated)
	require.Zero(t, s.BytesReordered)
	require.Zero(t, s.BytesCorrupt)
	require.Zero(t, s.AppErrors, s.Errors)
	require.Zero(t, s.FlowsLost)
	require.True(t, s.Drained)
	require.True(t, s.ok())

	require.Equal(t, 2, s.Handovers)
	require.Equal(t, 3, s.Cells)
	require.Equal(t, 1, s.Tunnels)
	require.Positive(t, s.Migrations+s.Resumes, "the flow moved with the train")
	require.NotEmpty(t, s.Stalls)
	for _, st := range s.Stalls {
		// No byte crosses an outage; the reader may still be emptying
		// its buffers as one begins.
		require.GreaterOrEqual(t, st.StallMs, st.OutageMs/2)
	}
	require.NotEmpty(t, statuses)
	require.Equal(t, 3, statuses[len(statuses)-1].Cell)
}

// TestRideInterrupted ends a ride early, as Ctrl-C does: the summary is
// still complete and clean.
func TestRideInterrupted(t *testing.T) {
	tr, err := trace.Profile("hsr-300")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	s, err := run(ctx, config{Trace: tr, TraceName: "hsr-300", Duration: time.Minute, Seed: 1, UpRate: defaultUpRate})
	require.NoError(t, err)
	require.True(t, s.Interrupted)
	require.Less(t, s.DurationS, 5.0)
	require.True(t, s.ok(), "%+v", *s)
	require.Positive(t, s.BytesVerified)
}

func TestSummaryOK(t *testing.T) {
	require.True(t, (&summary{BytesVerified: 1}).ok())
	for _, bad := range []summary{{BytesLost: 1}, {BytesDuplicated: 1}, {BytesReordered: 1}, {BytesCorrupt: 1}, {AppErrors: 1}, {FlowsLost: 1}} {
		require.False(t, bad.ok(), "%+v", bad)
	}
}

func TestSummaryJSONFields(t *testing.T) {
	b, err := json.Marshal(&summary{})
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"bytes_verified", "bytes_lost", "bytes_duplicated", "app_errors",
		"handovers", "stall_p50_ms", "stall_p99_ms", "duration_s", "goodput_mbps"} {
		require.Contains(t, m, k)
	}
}

// pattern returns the stream's bytes [from, to).
func pattern(from, to uint64) []byte {
	b := make([]byte, to-from)
	fillPattern(b, from, keyDown)
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestVerifier(t *testing.T) {
	garbage := []byte("this is no part of any stream...")
	for _, tc := range []struct {
		name                         string
		stream                       []byte
		sent                         uint64
		lost, dup, reordered, broken uint64
	}{
		{"intact", pattern(0, 10000), 10000, 0, 0, 0, 0},
		{"tail missing", pattern(0, 9000), 10000, 1000, 0, 0, 0},
		{"gap", cat(pattern(0, 3001), pattern(4000, 10000)), 10000, 999, 0, 0, 0},
		{"again", cat(pattern(0, 5000), pattern(4003, 10000)), 10000, 0, 997, 0, 0},
		{"swapped", cat(pattern(0, 2000), pattern(3000, 4000), pattern(2000, 3000), pattern(4000, 5000)), 5000, 0, 0, 1000, 0},
		{"garbage inside", cat(pattern(0, 2000), garbage, pattern(2000, 3000)), 3000, 0, 0, 0, uint64(len(garbage))},
		{"other direction", func() []byte { b := make([]byte, 800); fillPattern(b, 0, keyUp); return b }(), 0, 0, 0, 0, 800},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Fed in reads of odd sizes, as a flow delivers them.
			for _, chunk := range []int{1, 7, 13, 4096, len(tc.stream)} {
				rc := newReceiver(keyDown, 0, time.Now())
				for p := tc.stream; len(p) > 0; {
					n := min(chunk, len(p))
					rc.feed(p[:n], time.Now())
					p = p[n:]
				}
				lost, dup, reordered, broken := rc.counts(tc.sent)
				require.Equal(t, []uint64{tc.lost, tc.dup, tc.reordered, tc.broken},
					[]uint64{lost, dup, reordered, broken}, "reads of %d bytes", chunk)
			}
		})
	}
}

func TestPatternWordsNameTheirOffsets(t *testing.T) {
	b := pattern(0, 1<<16)
	for o := 0; o+8 <= len(b); o += 8 {
		w := binary.LittleEndian.Uint64(b[o:])
		require.Equal(t, uint64(o), (w^keyDown)*patternMulInv)
	}
	require.Equal(t, uint64(1), uint64(patternMul)*patternMulInv)
}

func TestStallAfter(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	rc := newReceiver(keyDown, 0, t0)
	b := pattern(0, 1<<20)
	off := 0
	feedAt := func(ms int) { rc.feed(b[off:off+100], at(ms)); off += 100 }
	for ms := 0; ms <= 1000; ms += 2 {
		feedAt(ms)
	}
	// A tunnel from 1000 to 3000 ms, a handover at 2900 ms, data again
	// at 3200 ms: the handover's stall counts from 2900.
	for ms := 3200; ms <= 4000; ms += 2 {
		feedAt(ms)
	}
	stall, open := rc.stallAfter(at(2900), 600*time.Millisecond, at(5000))
	require.Equal(t, 300*time.Millisecond, stall)
	require.False(t, open)
	// A handover at 4100 ms with no data since 4000: still stalling.
	stall, open = rc.stallAfter(at(4100), 600*time.Millisecond, at(4500))
	require.Equal(t, 400*time.Millisecond, stall)
	require.True(t, open)
}
