package sal

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roamnet/roam/mobility/trace"
	"github.com/stretchr/testify/require"
)

// TestPathsHSR300Dual rides the hsr-300-dual profile (two LTE carriers
// that hand over at different places, 50-150 ms RTT, 80-300 ms outages;
// mobility/trace) with a 1 kHz stream of 64-byte messages from the dialer,
// the benchmark's handover workload, once over both carriers and once over
// the first alone. For each handover of a carrier (outside tunnels) it
// takes the stall: the longest gap between arrivals around it, less the
// usual 1 ms, in RTTs of the other carrier; over one carrier, only its
// own handovers count. The first 120 s of the ride;
// ROAM_SOAK=1 rides all ten minutes.
// debugHSR logs each handover's timeline.
var debugHSR = false

func TestPathsHSR300Dual(t *testing.T) {
	ride := 120 * time.Second
	if soak {
		ride = 10 * time.Minute
	}
	trs, err := trace.MultiProfile("hsr-300-dual")
	require.NoError(t, err)
	var dual, single, agg []float64
	for _, tc := range []struct {
		name   string
		paths  []string
		out    *[]float64
		policy PathPolicy
	}{{"both carriers", nil, &dual, PathStandby}, {"first carrier", []string{}, &single, PathStandby}, {"both carriers aggregated", nil, &agg, PathAggregate}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newDualBed(t, Config{Paths: tc.paths, PathPolicy: tc.policy})
				roundTrip(t, b.c, b.sc, "hello")
				if tc.paths == nil {
					b.waitPaths(t, 2)
				}
				ctx, cancel := context.WithTimeout(t.Context(), ride)
				defer cancel()
				var wg sync.WaitGroup
				start := time.Now()
				for i, p := range b.mp.Paths() {
					wg.Go(func() { trace.Play(ctx, trs[i], p) })
				}
				arrivals := stream1kHz(t, b.c, b.sc, ride)
				wg.Wait()

				var stalls []float64
				for i, tr := range trs {
					if i > 0 && tc.paths != nil {
						break // one path: the second carrier's handovers do not touch it
					}
					other := trs[1-i]
					for _, e := range tr.Events {
						if e.Kind != trace.KindHandover || e.At >= ride-5*time.Second || inTunnel(tr, e) {
							continue
						}
						// Until the other carrier's next handover at the
						// earliest (the profile keeps them 1 s apart).
						from, to := start.Add(e.At), start.Add(e.At+e.Duration+900*time.Millisecond)
						gap := longestGap(arrivals, from, to) - time.Millisecond
						rtt := linkAt(other, e.At).RTT
						stalls = append(stalls, float64(max(gap, 0))/float64(rtt))
						if debugHSR {
							down, _ := b.clientLog.firstAfter(from, EventPathDown)
							susp, _ := b.clientLog.firstAfter(from, EventSuspended)
							res, _ := b.serverLog.firstAfter(from, EventResumed)
							var last time.Time
							for _, a := range arrivals {
								if a.After(from) {
									break
								}
								last = a
							}
							t.Logf("carrier %d at %v outage %v: gap %v; last arrival %v before; down +%v susp +%v server resumed +%v", i, e.At, e.Duration, gap, from.Sub(last), down.Sub(from), susp.Sub(from), res.Sub(from))
						}
					}
				}
				slices.Sort(stalls)
				require.NotEmpty(t, stalls)
				p50, p99 := stalls[len(stalls)/2], stalls[(len(stalls)*99)/100]
				st := b.c.Stats()
				t.Logf("%d handovers: stall p50 %.2f RTT, p99 %.2f RTT (of the other carrier); %d path switches; %d of %d bytes sent again",
					len(stalls), p50, p99, b.clientLog.count(EventPathDown), st.BytesReplayed, st.BytesWritten)
				*tc.out = stalls
				require.Zero(t, b.clientLog.count(EventLost))
			})
		})
	}
	if len(dual) > 0 && len(single) > 0 {
		// Loose bounds, against regressions; the figures are in the log.
		require.Less(t, dual[len(dual)/2], single[len(single)/2], "two carriers stall less than one")
		require.LessOrEqual(t, dual[len(dual)/2], 2.5, "p50 within a few round trips")
	}
}

// stream1kHz sends a 64-byte message, numbered, from w every millisecond
// for d, as the benchmark's handover workload does (messages that fall
// due while a Write blocks go out together when it returns), and returns
// when each message arrived at r. It checks that each arrives once, in
// order.
func stream1kHz(t *testing.T, w, r *Conn, d time.Duration) []time.Time {
	t.Helper()
	total := int(d / time.Millisecond)
	var wg sync.WaitGroup
	wg.Go(func() {
		start := time.Now()
		var buf []byte
		sent := 0
		for sent < total {
			due := min(total, int(time.Since(start)/time.Millisecond)+1)
			buf = buf[:0]
			for ; sent < due; sent++ {
				var m [64]byte
				binary.BigEndian.PutUint64(m[:], uint64(sent))
				buf = append(buf, m[:]...)
			}
			if _, err := w.Write(buf); err != nil {
				t.Errorf("write: %v", err)
				return
			}
			time.Sleep(time.Until(start.Add(time.Duration(sent) * time.Millisecond)))
		}
		w.CloseWrite()
	})
	arrivals := make([]time.Time, 0, total)
	var m [64]byte
	for {
		_, err := io.ReadFull(r, m[:])
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		var want [64]byte
		binary.BigEndian.PutUint64(want[:], uint64(len(arrivals)))
		require.True(t, bytes.Equal(want[:], m[:]), "message %d", len(arrivals))
		arrivals = append(arrivals, time.Now())
	}
	wg.Wait()
	require.Len(t, arrivals, total)
	return arrivals
}

// longestGap returns the longest time between consecutive arrivals that
// overlaps [from, to].
func longestGap(arrivals []time.Time, from, to time.Time) time.Duration {
	var longest time.Duration
	for i := 1; i < len(arrivals); i++ {
		if arrivals[i].Before(from) || arrivals[i-1].After(to) {
			continue
		}
		longest = max(longest, arrivals[i].Sub(arrivals[i-1]))
	}
	return longest
}

// inTunnel reports whether a handover overlaps one of the trace's
// blackouts, or follows one within 3 s: the stall then is the tunnel's.
func inTunnel(tr *trace.Trace, h trace.Event) bool {
	for _, e := range tr.Events {
		if e.Kind == trace.KindBlackout && h.At+h.Duration+3*time.Second > e.At && h.At < e.At+e.Duration+3*time.Second {
			return true
		}
	}
	return false
}

// linkAt returns the trace's link at time at.
func linkAt(tr *trace.Trace, at time.Duration) trace.Link {
	var l trace.Link
	for _, e := range tr.Events {
		if e.At > at {
			break
		}
		if e.Kind == trace.KindLink {
			l = l.Apply(e)
		}
	}
	return l
}
