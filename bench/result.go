package main

import (
	"math"
	"time"
)

// laneResult is what one lane measured in one run: a row of results.csv
// and an object of results.json.
type laneResult struct {
	Scenario string `json:"scenario"`
	System   string `json:"system"`
	Variant  string `json:"variant,omitempty"` // "" is the scenario itself; else its twin
	Run      int    `json:"run"`
	Skipped  string `json:"skipped,omitempty"` // why the system cannot run the scenario here
	Failed   string `json:"failed,omitempty"`  // what went wrong
	Note     string `json:"note,omitempty"`    // what the figures need to be read with

	Seconds   float64 `json:"seconds"`    // the run's length
	UpSeconds float64 `json:"up_seconds"` // of which the path was up
	Bytes     uint64  `json:"bytes"`      // delivered to the receiving application in the run
	// SentBytes is what the client put on its paths toward the server in
	// the run, headers and retransmissions included, by the emulated
	// paths' counters; 0 where the lane cannot count it.
	SentBytes uint64  `json:"sent_bytes,omitempty"`
	Goodput   float64 `json:"goodput_mbps"`
	// DoneSeconds is, for a transfer of a fixed size, when its last byte
	// arrived; 0 if it did not within the run.
	DoneSeconds float64 `json:"done_seconds,omitempty"`

	Lost       uint64 `json:"lost_bytes"`
	Duplicated uint64 `json:"duplicated_bytes"`
	Corrupt    uint64 `json:"corrupt_bytes"`
	AppErrors  int64  `json:"app_errors"`
	Reconnects int64  `json:"reconnects"`        // by the application
	Resumes    int64  `json:"resumes,omitempty"` // by roam, unseen by the application

	Flows         int `json:"flows"`
	FlowsComplete int `json:"flows_complete"` // flows that received data after the last disruption

	CPUSeconds  float64 `json:"cpu_seconds,omitempty"`   // only where the lane ran alone
	HeapPerFlow float64 `json:"heap_per_flow,omitempty"` // bytes, only where the lane ran alone

	Stalls     []stallRecord `json:"stalls"`
	BinSeconds float64       `json:"bin_seconds"`
	Series     []float64     `json:"goodput_series_mbps"`
	Marks      []markRecord  `json:"marks"`
}

type stallRecord struct {
	At     float64 `json:"at_s"`
	Kind   string  `json:"kind"`
	Flow   int     `json:"flow"`
	Outage float64 `json:"outage_ms"`
	Stall  float64 `json:"stall_ms"`
	RTT    float64 `json:"rtt_ms"` // with several paths, the surviving path's
	Path   int     `json:"path"`   // the path handing over, or -1 (every path)
}

// rtts is the whole stall in RTTs: with several paths, in RTTs of the
// path that survives the handover, for no outage need be waited out.
func (s stallRecord) rtts() float64 {
	if s.RTT <= 0 {
		return 0
	}
	return s.Stall / s.RTT
}

// sentPerDelivered is what the client sent over what the application
// received: the price of headers, retransmissions and redundancy; NaN if
// the lane could not count.
func (r *laneResult) sentPerDelivered() float64 {
	if r.SentBytes == 0 || r.Bytes == 0 {
		return math.NaN()
	}
	return float64(r.SentBytes) / float64(r.Bytes)
}

// beyondRTTs is the part of the stall past the path's own outage, in
// RTTs of the link after it: what the system adds.
func (s stallRecord) beyondRTTs() float64 {
	if s.RTT <= 0 {
		return 0
	}
	return max(s.Stall-s.Outage, 0) / s.RTT
}

type markRecord struct {
	At     float64 `json:"at_s"`
	Kind   string  `json:"kind"`
	Outage float64 `json:"outage_ms"`
	Path   int     `json:"path"` // the path it is on, or -1 (every path)
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// measure fills r from the flows' summaries of a run that began at t0
// and lasted length.
func (r *laneResult) measure(sc *scenario, evs []pathEvent, t0 time.Time, length time.Duration, sums []flowSummary) {
	r.Seconds = length.Seconds()
	r.UpSeconds = (length - downTime(evs, length)).Seconds()
	r.Flows = len(sums)
	r.BinSeconds = sc.bin.Seconds()
	nbins := int((length + sc.bin - 1) / sc.bin)
	bins := make([]uint64, nbins)
	marks := marksOf(evs, sc.tunnelStalls)
	var lastMark time.Duration
	for _, m := range marks {
		r.Marks = append(r.Marks, markRecord{At: m.at.Seconds(), Kind: m.kind, Outage: msf(m.outage), Path: m.path})
		lastMark = max(lastMark, m.at+m.outage+m.span)
	}
	var latest time.Time
	for i, s := range sums {
		r.Bytes += s.sinceStart
		r.Lost += s.lost
		r.Duplicated += s.dup
		r.Corrupt += s.corrupt
		for j, b := range s.bins {
			if j < nbins {
				bins[j] += b
			}
		}
		if !s.doneAt.IsZero() && s.doneAt.After(latest) {
			latest = s.doneAt
		}
		if s.receivedAfter(t0.Add(lastMark)) {
			r.FlowsComplete++
		}
		for _, m := range marks {
			if !m.stall || m.at+m.outage >= length {
				continue
			}
			from := t0.Add(m.at)
			st := s.stallAround(from, from.Add(m.outage+m.span+500*time.Millisecond))
			st = max(st-sc.work.every, 0) // a paced flow's normal spacing is no stall
			r.Stalls = append(r.Stalls, stallRecord{
				At: m.at.Seconds(), Kind: m.kind, Flow: i,
				Outage: msf(m.outage), Stall: msf(st), RTT: msf(m.rtt), Path: m.path,
			})
		}
	}
	for _, b := range bins {
		r.Series = append(r.Series, float64(b)*8/sc.bin.Seconds()/1e6)
	}
	if sc.work.want > 0 {
		if len(sums) > 0 && !latest.IsZero() && r.allDone(sums) {
			r.DoneSeconds = latest.Sub(t0).Seconds()
			r.Goodput = float64(sc.work.want) * float64(len(sums)) * 8 / r.DoneSeconds / 1e6
		}
		return
	}
	r.Goodput = float64(r.Bytes) * 8 / length.Seconds() / 1e6
}

func (r *laneResult) allDone(sums []flowSummary) bool {
	for _, s := range sums {
		if s.doneAt.IsZero() {
			return false
		}
	}
	return true
}
