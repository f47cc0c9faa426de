package main

import (
	"fmt"
	"time"

	"github.com/roamnet/roam/mobility/trace"
)

// scenario is one situation every system is put through.
type scenario struct {
	name   string
	title  string      // what it is, for the report
	events []pathEvent // the first sets the link
	// length is how long a run lasts; for a transfer of work.want bytes,
	// the most it may take.
	length time.Duration
	work   workload
	flows  int
	bin    time.Duration // width of the goodput series' bins
	// sequential runs one lane at a time, in turns, so that each lane's CPU
	// time and memory can be measured; otherwise all lanes run side by side.
	sequential   bool
	runs         int
	tunnelStalls bool   // a tunnel counts as a stall
	twin         string // if set, every system also runs the scenario's link alone, standing still, under this name
	missing      string // why the scenario cannot run here
}

// scenarioOpts are the flags that shape the scenarios.
type scenarioOpts struct {
	quick     bool
	reference string // path of the reference trace
	runs      int    // runs of the calm scenario; 0 is the default
	// traceLength, if set, cuts the trace scenarios (hsr-300, reference)
	// to this length.
	traceLength time.Duration
}

// pick returns quick in a quick run, else full.
func pick[T any](o scenarioOpts, quick, full T) T {
	if o.quick {
		return quick
	}
	return full
}

func mbit(m float64) int64 { return int64(m * 1e6) }

func scenarios(o scenarioOpts) ([]*scenario, error) {
	wired, err := trace.Profile("wired")
	if err != nil {
		return nil, err
	}
	hsr, err := trace.Profile("hsr-300")
	if err != nil {
		return nil, err
	}
	bulk := workload{}
	calmLen := pick(o, 2*time.Second, 10*time.Second)
	hsrLen := pick(o, 20*time.Second, hsr.Duration())
	refLen := pick(o, 16*time.Second, 0)
	if o.traceLength > 0 {
		hsrLen, refLen = min(o.traceLength, hsr.Duration()), o.traceLength
	}
	out := []*scenario{
		{
			name:   "calm",
			title:  "the wired profile: 10 ms RTT, 1 ms jitter, 0.01% loss, 100 Mbit/s; systems in turns",
			events: fromTrace(wired, calmLen), length: calmLen, work: bulk, flows: 1,
			bin: 100 * time.Millisecond, sequential: true, runs: max(o.runs, pick(o, 1, 3)),
		},
		{
			name: "hsr-300",
			title: fmt.Sprintf("the hsr-300 profile (%v of %v): handovers every 12-19 s, 50-150 ms RTT, 0.5-3%% loss, 2-20 Mbit/s, tunnels",
				hsrLen, hsr.Duration()),
			events: fromTrace(hsr, hsrLen), length: hsrLen, work: bulk, flows: 1,
			bin: pick(o, 250*time.Millisecond, time.Second), runs: 1, twin: "still",
		},
	}
	dual, err := trace.MultiProfile("hsr-300-dual")
	if err != nil {
		return nil, err
	}
	// The quick run's 30 s hold two handovers of each carrier, 1.4 s
	// and 5 s apart, and no tunnel.
	dualLen := pick(o, 30*time.Second, dual[0].Duration())
	if o.traceLength > 0 {
		dualLen = min(o.traceLength, dual[0].Duration())
	}
	out = append(out, &scenario{
		name: "hsr-dual",
		title: fmt.Sprintf("the hsr-300-dual profile (%v of %v): two carriers, each like hsr-300, handing over at different times (≥ 1 s apart), tunnels cutting both; "+
			"dual-path systems use both, the others the first", dualLen, dual[0].Duration()),
		events: fromMulti(dual, dualLen), length: dualLen, work: bulk, flows: 1,
		bin: pick(o, 250*time.Millisecond, time.Second), runs: 1,
	})

	ref := &scenario{
		name: "reference", work: bulk, flows: 1, bin: pick(o, 250*time.Millisecond, time.Second), runs: 1,
	}
	if tr, err := trace.ParseFile(o.reference); err != nil {
		ref.missing = fmt.Sprintf("no reference trace: %v", err)
		ref.title = "the reference trace (not found)"
	} else {
		ref.length = tr.Duration()
		if refLen > 0 {
			ref.length = min(refLen, ref.length)
		}
		ref.events = fromTrace(tr, ref.length)
		ref.title = fmt.Sprintf("%s as given (%v of %v)", o.reference, ref.length, tr.Duration())
	}
	out = append(out, ref)

	moveLink := trace.Link{RTT: 40 * time.Millisecond, Rate: mbit(20)}
	moves := []pathEvent{{kind: evLink, link: moveLink}}
	for _, at := range pick(o, []float64{2, 4.5}, []float64{3, 8, 13, 18, 23}) {
		moves = append(moves, pathEvent{at: time.Duration(at * float64(time.Second)), kind: evServerMove})
	}
	out = append(out, &scenario{
		name:   "server-move",
		title:  fmt.Sprintf("the server moves to a new address %d times; 40 ms RTT, 20 Mbit/s, no loss", len(moves)-1),
		events: moves, length: pick(o, 7*time.Second, 28*time.Second), work: bulk, flows: 1,
		bin: 100 * time.Millisecond, runs: 1,
	})

	tunnelAt, tunnelLen := pick(o, 2*time.Second, 5*time.Second), pick(o, 6*time.Second, 30*time.Second)
	tunnelLink := trace.Link{RTT: 60 * time.Millisecond, Jitter: 8 * time.Millisecond, Loss: 0.005, Rate: mbit(20)}
	out = append(out, &scenario{
		name: "tunnel",
		title: fmt.Sprintf("a %v tunnel blackout%s; 60 ms RTT, 0.5%% loss, 20 Mbit/s", tunnelLen,
			pick(o, " (30 s in the full run)", "")),
		events: []pathEvent{{kind: evLink, link: tunnelLink}, {at: tunnelAt, kind: evBlackout, dur: tunnelLen}},
		length: tunnelAt + tunnelLen + pick(o, 5*time.Second, 30*time.Second), work: bulk, flows: 1,
		bin: 100 * time.Millisecond, runs: 1, tunnelStalls: true,
	})

	natLink := trace.Link{RTT: 20 * time.Millisecond, Rate: mbit(20)}
	nat := []pathEvent{{kind: evLink, link: natLink}}
	for i := range 50 {
		nat = append(nat, pathEvent{at: 500*time.Millisecond + time.Duration(i)*60*time.Millisecond, kind: evRebind})
	}
	out = append(out, &scenario{
		name:   "nat-rebind",
		title:  "10 MB through 50 NAT rebindings in 3 s (from 0.5 s); 20 ms RTT, 20 Mbit/s, no loss; beside the same transfer without them",
		events: nat, length: pick(o, 12*time.Second, 120*time.Second), work: workload{want: 10 << 20}, flows: 1,
		bin: 100 * time.Millisecond, runs: 1, twin: "calm",
	})

	flows := pick(o, 100, 1000)
	flowLink := trace.Link{RTT: 20 * time.Millisecond, Rate: mbit(100)}
	handAt := pick(o, 1500*time.Millisecond, 3*time.Second)
	out = append(out, &scenario{
		name:   "flows",
		title:  fmt.Sprintf("%d concurrent flows (256 B every 50 ms each) through one handover (100 ms outage); 20 ms RTT, 100 Mbit/s; systems in turns", flows),
		events: []pathEvent{{kind: evLink, link: flowLink}, {at: handAt, kind: evHandover, dur: 100 * time.Millisecond}},
		length: handAt + pick(o, 2*time.Second, 15*time.Second),
		work:   workload{every: 50 * time.Millisecond, size: 256}, flows: flows,
		bin: 100 * time.Millisecond, sequential: true, runs: 1,
	})
	return out, nil
}
