package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roamnet/roam/mobility/trace"
	"github.com/stretchr/testify/require"
)

// TestMultiPathEvents: the traces of a multi-path profile become one list
// of events, each on its path, the tunnels once on every path; a
// single-path lane sees the first path's; a handover's RTT is the
// surviving path's, and one at a tunnel's end is not measured.
func TestMultiPathEvents(t *testing.T) {
	trs, err := trace.MultiProfile("hsr-300-dual")
	require.NoError(t, err)
	evs := fromMulti(trs, 130*time.Second)
	require.Equal(t, 2, pathsOf(evs))
	require.True(t, sortedByTime(evs))
	tunnels := 0
	for _, e := range evs {
		if e.kind == evBlackout {
			tunnels++
			require.Equal(t, allPaths, e.path)
		}
	}
	require.Equal(t, 1, tunnels, "the 25 s tunnel at 98 s, once")
	for _, e := range onPath(evs, 0) {
		require.Contains(t, []int{0, allPaths}, e.path)
	}
	require.Equal(t, 1, pathsOf(onPath(evs, 0)))

	var measured, shadowed int
	for _, m := range marksOf(evs, false) {
		switch m.kind {
		case "handover":
			measured++
			other := 1 - m.path
			require.Equal(t, linkOn(evs, other, m.at).RTT, m.rtt, "the surviving path's RTT, at %v", m.at)
			require.True(t, m.stall)
		case "handover by a tunnel":
			shadowed++
			require.False(t, m.stall)
		case "tunnel":
			require.False(t, m.stall)
		}
	}
	// a: 7.6 23.1 42.0 54.4 70.6 89.2 | 123.6 (tunnel end); b: 9.0 28.1 44.6 57.6 73.3 90.4 | 124.9
	require.Equal(t, 12, measured)
	require.Equal(t, 2, shadowed)
	// A handover whose outage ends within 2 s of a tunnel's start, or
	// that starts within 2 s of its end, is the tunnel's.
	tun := []pathEvent{{kind: evLink, link: trace.Link{RTT: 50 * time.Millisecond}}, {kind: evLink, link: trace.Link{RTT: 80 * time.Millisecond}, path: 1},
		{at: 10 * time.Second, kind: evBlackout, dur: 5 * time.Second, path: allPaths}}
	for at, measured := range map[time.Duration]bool{
		7*time.Second + 700*time.Millisecond: true, 7*time.Second + 900*time.Millisecond: false,
		16 * time.Second: false, 17*time.Second + 100*time.Millisecond: true,
	} {
		ms := marksOf(append(slices.Clone(tun), pathEvent{at: at, kind: evHandover, dur: 200 * time.Millisecond, path: 1}), false)
		require.Len(t, ms, 2)
		require.Equal(t, measured, ms[1].stall, "a handover at %v", at)
		require.Equal(t, 50*time.Millisecond, ms[1].rtt, "the first path survives the second's handover")
	}
	require.Equal(t, downTime(onPath(evs, 0), 130*time.Second), downTime(evs, 130*time.Second), "down time is the first path's")
}

func sortedByTime(evs []pathEvent) bool {
	for i := 1; i < len(evs); i++ {
		if evs[i].at < evs[i-1].at {
			return false
		}
	}
	return true
}

// TestMultiRoamLaneHandover runs roam over emu.MultiPath in virtual time
// through a 300 ms handover of the first path: every byte arrives once;
// on one path the flow waits out the outage, on two it moves to the
// other path before the outage ends, and the paths' counters see what
// the client sent.
func TestMultiRoamLaneHandover(t *testing.T) {
	for _, paths := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d paths", paths), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const outage = 300 * time.Millisecond
				lk := trace.Link{RTT: 40 * time.Millisecond, Rate: mbit(10)}
				evs := []pathEvent{{kind: evLink, link: lk}, {kind: evLink, link: lk, path: 1},
					{at: 2 * time.Second, kind: evHandover, dur: outage}}
				sc := &scenario{events: evs, length: 5 * time.Second, flows: 1, bin: 100 * time.Millisecond}
				res, sent := runMultiRoam(t, sc, paths)
				t.Logf("goodput %.2f Mbit/s, stalls %+v, sent %d of %d", res.Goodput, res.Stalls, sent, res.Bytes)
				require.Zero(t, res.Lost+res.Duplicated+res.Corrupt)
				require.Zero(t, res.AppErrors)
				require.Greater(t, res.Goodput, 5.0)
				require.Len(t, res.Stalls, 1)
				st := time.Duration(res.Stalls[0].Stall * float64(time.Millisecond))
				if paths == 1 {
					require.GreaterOrEqual(t, st, outage, "one path: the outage is waited out")
				} else {
					require.Less(t, st, outage, "two paths: the flow moves before the outage ends")
				}
				require.Greater(t, sent, res.Bytes, "headers at least")
				require.Less(t, float64(sent)/float64(res.Bytes), 1.2)
			})
		})
	}
}

// runMultiRoam runs sc's one flow on a multiRoamLane as runLanes does,
// and returns its result and the bytes the client sent in the run.
func runMultiRoam(t *testing.T, sc *scenario, paths int) (laneResult, uint64) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	g := newGate()
	env := &laneEnv{link: linkAt(sc.events, 0), seed: 1, gate: g,
		senders: []*flowSender{{w: sc.work, g: g}}, records: []*flowRecord{newFlowRecord(sc.bin, 0)}}
	for p := range pathsOf(sc.events) {
		env.links = append(env.links, linkOn(sc.events, p, 0))
	}
	l := &multiRoamLane{paths: paths}
	require.NoError(t, l.start(ctx, env))
	defer l.close()
	require.NoError(t, g.waitReady(ctx, 1))
	t0 := time.Now()
	env.records[0].begin(t0)
	sent0 := l.sentBytes()
	g.start(t0)
	var wg sync.WaitGroup
	wg.Go(func() { play(ctx, t0, sc.events, l) })
	time.Sleep(sc.length)
	end := time.Now()
	var res laneResult
	res.measure(sc, sc.events, t0, sc.length, []flowSummary{env.records[0].summary(end)})
	sent := l.sentBytes() - sent0
	cancel()
	wg.Wait()
	res.AppErrors = l.counts().appErrors
	return res, sent
}
