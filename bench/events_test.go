package main

import (
	"testing"
	"time"

	"github.com/roamnet/roam/mobility/trace"
	"github.com/stretchr/testify/require"
)

func TestMarksAndDownTime(t *testing.T) {
	s := time.Second
	evs := []pathEvent{
		{kind: evLink, link: trace.Link{RTT: 60 * time.Millisecond}},
		{at: 2 * s, kind: evHandover, dur: 200 * time.Millisecond},
		{at: 2*s + 200*time.Millisecond, kind: evLink, link: trace.Link{RTT: 100 * time.Millisecond}},
		{at: 5 * s, kind: evBlackout, dur: 3 * s},
		{at: 6 * s, kind: evServerMove},
		{at: 9 * s, kind: evRebind},
		{at: 9*s + 60*time.Millisecond, kind: evRebind},
		{at: 9*s + 120*time.Millisecond, kind: evRebind},
	}
	require.Equal(t, 3*s+200*time.Millisecond, downTime(evs, 10*s))
	require.Equal(t, 2*s+200*time.Millisecond, downTime(evs, 7*s), "cut at the run's end")

	marks := marksOf(evs, false)
	require.Len(t, marks, 4)
	require.Equal(t, mark{at: 2 * s, kind: "handover", outage: 200 * time.Millisecond, stall: true, rtt: 100 * time.Millisecond}, marks[0])
	require.False(t, marks[1].stall, "a tunnel is no handover")
	require.Equal(t, "server move", marks[2].kind)
	require.Equal(t, mark{at: 9 * s, kind: "NAT rebindings", span: 120 * time.Millisecond, stall: true, rtt: 100 * time.Millisecond}, marks[3])
	require.Len(t, linkOnly(evs), 2)
}

func TestFlowRecordStalls(t *testing.T) {
	t0 := time.Now()
	r := newFlowRecord(100*time.Millisecond, 0)
	r.begin(t0)
	chunk := make([]byte, 1000)
	off := uint64(0)
	for _, at := range []time.Duration{0, 5, 10, 300, 305, 1000} { // ms
		fillPattern(chunk, off)
		r.feed(chunk, t0.Add(at*time.Millisecond))
		off += uint64(len(chunk))
	}
	s := r.summary(t0.Add(1500 * time.Millisecond))
	require.Equal(t, uint64(6000), s.sinceStart)
	require.Zero(t, s.lost+s.dup+s.corrupt)
	require.Equal(t, 290*time.Millisecond, s.stallAround(t0.Add(100*time.Millisecond), t0.Add(200*time.Millisecond)))
	require.Equal(t, 695*time.Millisecond, s.stallAround(t0.Add(400*time.Millisecond), t0.Add(500*time.Millisecond)))
	require.Equal(t, 500*time.Millisecond, s.stallAround(t0.Add(1200*time.Millisecond), t0.Add(1300*time.Millisecond)), "a stall still going at the end")
	require.Equal(t, []uint64{3000, 0, 0, 2000, 0, 0, 0, 0, 0, 0, 1000}, s.bins)
}
