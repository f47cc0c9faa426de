package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"
)

// runner runs scenarios and reports progress, one line per lane and run.
type runner struct {
	systems  []system
	seed     uint64
	progress io.Writer
	began    time.Time
}

// laneSpec is one lane of a run: a system on a variant of the scenario.
type laneSpec struct {
	sys     system
	variant string
	events  []pathEvent
}

// manyFlows is the least number of flows whose memory per flow is
// measured.
const manyFlows = 100

// slowStep is how long setting lanes up or closing one may take before
// the progress says so.
const slowStep = 5 * time.Second

// readyTimeout bounds the time every flow of a run has to connect.
const readyTimeout = 60 * time.Second

func (rn *runner) logf(format string, args ...any) {
	el := time.Since(rn.began).Round(time.Second)
	fmt.Fprintf(rn.progress, "[%6s] %s\n", el, fmt.Sprintf(format, args...))
}

// run runs sc's runs and returns a result per lane and run.
func (rn *runner) run(ctx context.Context, sc *scenario) []laneResult {
	var out []laneResult
	if sc.missing != "" {
		for _, sys := range rn.systems {
			if sys.dualOnly && pathsOf(sc.events) < 2 {
				continue
			}
			out = append(out, laneResult{Scenario: sc.name, System: sys.name, Skipped: sc.missing})
		}
		rn.logf("%s: skipped: %s", sc.name, sc.missing)
		return out
	}
	for run := range sc.runs {
		var specs []laneSpec
		for _, sys := range rn.systems {
			if sys.dualOnly && pathsOf(sc.events) < 2 {
				continue
			}
			specs = append(specs, laneSpec{sys: sys, events: sc.events})
			if sc.twin != "" {
				specs = append(specs, laneSpec{sys: sys, variant: sc.twin, events: linkOnly(sc.events)})
			}
		}
		// Rotate the order from run to run, so that no system always goes
		// first (sequential) or is always set up first (side by side).
		k := run % len(specs)
		specs = append(specs[k:], specs[:k]...)
		if sc.sequential {
			for _, s := range specs {
				out = append(out, rn.runLanes(ctx, sc, run, []laneSpec{s})...)
			}
		} else {
			out = append(out, rn.runLanes(ctx, sc, run, specs)...)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return out
}

type activeLane struct {
	spec    laneSpec
	lane    lane
	env     *laneEnv
	res     laneResult
	started bool
}

// runLanes runs the given lanes side by side, from one t0.
func (rn *runner) runLanes(ctx context.Context, sc *scenario, run int, specs []laneSpec) []laneResult {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g := newGate()
	alone := len(specs) == 1
	var heap0 uint64
	if alone && sc.flows >= manyFlows {
		// Let the lane before finish winding down, so that its garbage
		// is not counted against this one.
		time.Sleep(time.Second)
		heap0 = heapInUse()
	}
	var lanes []*activeLane
	waitFor := 0
	setup := time.Now()
	for _, s := range specs {
		a := &activeLane{spec: s, res: laneResult{Scenario: sc.name, System: s.sys.name, Variant: s.variant, Run: run + 1}}
		lanes = append(lanes, a)
		if why := s.sys.unsupported(sc); why != "" {
			a.res.Skipped = why
			continue
		}
		a.env = &laneEnv{link: linkAt(s.events, 0), seed: rn.seed + uint64(run), gate: g}
		for p := range pathsOf(s.events) {
			a.env.links = append(a.env.links, linkOn(s.events, p, 0))
		}
		for range sc.flows {
			a.env.senders = append(a.env.senders, &flowSender{w: sc.work, g: g})
			a.env.records = append(a.env.records, newFlowRecord(sc.bin, sc.work.want))
		}
		a.lane = s.sys.laneFor(sc)
		if err := a.lane.start(lctx, a.env); err != nil {
			a.res.Failed = "setup: " + err.Error()
			continue
		}
		a.started = true
		waitFor += sc.flows
	}
	rctx, rcancel := context.WithTimeout(lctx, readyTimeout)
	err := g.waitReady(rctx, waitFor)
	rcancel()
	if err != nil {
		for _, a := range lanes {
			if a.started {
				a.res.Failed = fmt.Sprintf("flows not all connected within %v", readyTimeout)
			}
		}
		cancel()
		return rn.finish(lanes)
	}
	if d := time.Since(setup); d > slowStep {
		rn.logf("  %s: setting up took %v", sc.name, d.Round(time.Millisecond))
	}
	var heap1 uint64
	if alone {
		heap1 = heapInUse()
	}
	cpu0 := cpuTime()
	t0 := time.Now()
	sent0 := make([]uint64, len(lanes))
	for i, a := range lanes {
		if a.started {
			for _, r := range a.env.records {
				r.begin(t0)
			}
			sent0[i] = sentBytes(a.lane)
		}
	}
	g.start(t0)
	var players sync.WaitGroup
	for _, a := range lanes {
		if a.started {
			evs := a.spec.events
			if _, multi := a.lane.(multiLane); !multi && pathsOf(evs) > 1 {
				evs = onPath(evs, 0) // a single-path system uses the first path
			}
			players.Go(func() { play(lctx, t0, evs, a.lane) })
		}
	}
	end := rn.wait(lctx, sc, t0, lanes)
	cpu1 := cpuTime()
	for i, a := range lanes {
		if a.started {
			a.res.SentBytes = sentBytes(a.lane) - sent0[i]
		}
	}
	length := sc.length
	if sc.work.want > 0 {
		length = end.Sub(t0)
	}
	for _, a := range lanes {
		if !a.started {
			continue
		}
		sums := make([]flowSummary, len(a.env.records))
		for i, r := range a.env.records {
			sums[i] = r.summary(end)
		}
		a.res.measure(sc, a.spec.events, t0, length, sums)
		if alone && cpu0 >= 0 {
			a.res.CPUSeconds = (cpu1 - cpu0).Seconds()
		}
		if alone && sc.flows >= manyFlows {
			// With one flow, the heap's noise (the lane before, still
			// being collected) is larger than the flow.
			a.res.HeapPerFlow = float64(int64(heap1)-int64(heap0)) / float64(sc.flows)
		}
	}
	cancel()
	players.Wait()
	return rn.finish(lanes)
}

// wait waits out the run: its length, or until every fixed-size transfer
// is in. It reports progress every 30 s.
func (rn *runner) wait(ctx context.Context, sc *scenario, t0 time.Time, lanes []*activeLane) time.Time {
	deadline := time.NewTimer(time.Until(t0.Add(sc.length)))
	defer deadline.Stop()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	var full chan struct{}
	if sc.work.want > 0 {
		full = make(chan struct{})
		go func() {
			defer close(full)
			for _, a := range lanes {
				if a.started {
					for _, r := range a.env.records {
						select {
						case <-r.full:
						case <-ctx.Done():
							return
						}
					}
				}
			}
		}()
	}
	for {
		select {
		case <-deadline.C:
			return time.Now()
		case <-full:
			return time.Now()
		case <-ctx.Done():
			return time.Now()
		case <-tick.C:
			rn.logf("  %s: %v of %v", sc.name, time.Since(t0).Round(time.Second), sc.length)
		}
	}
}

// finish counts, closes and reports the lanes.
func (rn *runner) finish(lanes []*activeLane) []laneResult {
	var out []laneResult
	for _, a := range lanes {
		if a.lane != nil {
			c := a.lane.counts()
			a.res.AppErrors, a.res.Reconnects, a.res.Resumes = c.appErrors, c.reconnects, c.resumes
			if n, ok := a.lane.(interface{ note() string }); ok {
				a.res.Note = n.note()
			}
		}
	}
	var wg sync.WaitGroup
	for _, a := range lanes {
		if a.lane != nil {
			wg.Go(func() {
				start := time.Now()
				a.lane.close()
				if d := time.Since(start); d > slowStep {
					rn.logf("  %s %s: closing took %v", a.res.Scenario, a.res.System, d.Round(time.Millisecond))
				}
			})
		}
	}
	wg.Wait()
	for _, a := range lanes {
		rn.logf("%s", progressLine(&a.res))
		out = append(out, a.res)
	}
	return out
}

func progressLine(r *laneResult) string {
	name := r.Scenario + " " + r.System
	if r.Variant != "" {
		name += " (" + r.Variant + ")"
	}
	name += fmt.Sprintf(" run %d", r.Run)
	switch {
	case r.Skipped != "":
		return name + ": skipped: " + r.Skipped
	case r.Failed != "":
		return name + ": failed: " + r.Failed
	}
	s := fmt.Sprintf("%s: %.2f Mbit/s", name, r.Goodput)
	if r.DoneSeconds > 0 {
		s += fmt.Sprintf(", done in %.2f s", r.DoneSeconds)
	}
	if st := stallsOf([]laneResult{*r}); len(st) > 0 {
		s += fmt.Sprintf(", stall p50 %.0f ms p99 %.0f ms", quantile(st, .5), quantile(st, .99))
	}
	return s + fmt.Sprintf(", lost %d dup %d, app errors %d, reconnects %d, resumes %d",
		r.Lost, r.Duplicated, r.AppErrors, r.Reconnects, r.Resumes)
}

// sentBytes returns what a lane's client has put on its paths so far,
// from the emulated paths' own counters (emu.LinkStats.Offered of the
// direction toward the server, which carries the flows' data), or 0 if
// the lane cannot say.
func sentBytes(l lane) uint64 {
	if s, ok := l.(interface{ sentBytes() uint64 }); ok {
		return s.sentBytes()
	}
	return 0
}

// heapInUse returns the live heap after a collection. It collects twice:
// the first moves what sync.Pools hold to their victim caches, the second
// frees it, so that a lane's pooled buffers do not count as the next
// lane's flows.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
