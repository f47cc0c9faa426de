package trace

import (
	"bytes"
	"cmp"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path"
	"slices"
	"time"
)

// HSR300DualSeed is the seed with which the hsr-300-dual profile was drawn
// from HSR300Dual(); a test keeps the files and the generator in step.
const HSR300DualSeed = 300

// MultiModel describes a ride on which a device uses several carriers at
// once, a modem on each. Each carrier has its own cells, drawn from Model
// as a single-carrier trace's are, so the carriers hand over at different
// places; the train's tunnels cut every carrier at once. The zero
// MultiModel is HSR300Dual.
type MultiModel struct {
	// Model gives each carrier's cells, the tunnels and the server moves.
	// Zero fields take their values from HSR300.
	Model
	// Carriers is the number of carriers, and of traces. Default 2.
	Carriers int
	// Separation is the least time between the end of one carrier's
	// handover outage and the start of another's, and the other way
	// round: no two carriers are ever in a handover together, as a
	// carrier's handover is pushed along the track until this holds.
	// Default 1 s. Negative: carriers may hand over together.
	Separation time.Duration
}

// HSR300Dual returns the model of the hsr-300-dual profile: two LTE
// carriers on the hsr-300 ride, each with hsr-300's cells, handing over
// at least 1 s apart, with hsr-300's tunnels cutting both. Figures and
// sources are in the header of profiles/hsr-300-dual/a.trace.
func HSR300Dual() MultiModel {
	return MultiModel{Model: HSR300(), Carriers: 2, Separation: time.Second}
}

// GenerateMulti draws a trace per carrier from the model. The same model
// and seed always give the same traces. Every trace holds the same
// blackouts (the tunnels); server moves are in the first trace only, for
// the server has one address on every path (emu.MultiPath.MoveServer
// moves it on all of them).
func GenerateMulti(m MultiModel, seed uint64) []*Trace {
	m.Model = m.Model.withDefaults()
	setDefault(&m.Carriers, 2)
	setDefault(&m.Separation, time.Second)
	end := roundTo(m.Duration, time.Millisecond)

	// The train's own schedule first, from a source of its own, so that
	// the number of carriers does not change the tunnels.
	shared := gen{m: m.Model, rng: rand.New(rand.NewPCG(seed, 0x726f616d2d74756e))} // "roam-tun"
	var tunnels [][2]time.Duration                                                  // entry, exit
	for t := shared.after(0, m.TunnelEvery); t < end; {
		length := min(roundTo(m.TunnelLength.draw(shared.rng), time.Millisecond), end-t)
		tunnels = append(tunnels, [2]time.Duration{t, t + length})
		t = shared.after(t+length, m.TunnelEvery)
	}
	var moves []time.Duration
	for t := shared.after(0, m.ServerMoveEvery); t < end; t = shared.after(t, m.ServerMoveEvery) {
		moves = append(moves, t)
	}

	var outages [][2]time.Duration // every carrier's so far: start, end
	trs := make([]*Trace, m.Carriers)
	for c := range trs {
		g := gen{m: m.Model, rng: rand.New(rand.NewPCG(seed, 0x726f616d2d637230+uint64(c)))} // "roam-cr0"…
		g.cell(0)
		// The train is somewhere inside its first cell of each carrier:
		// the carriers' cell edges are offset from the start.
		next := roundTo(time.Duration(g.rng.Float64()*float64(g.dwell())), time.Millisecond)
		var mine [][2]time.Duration
		for {
			outage := roundTo(m.Outage.draw(g.rng), time.Millisecond)
			next = settle(next, outage, m.Separation, tunnels, outages)
			if next >= end {
				break
			}
			g.emit(Event{At: next, Kind: KindHandover, Duration: outage})
			mine = append(mine, [2]time.Duration{next, next + outage})
			if next+outage < end {
				g.cell(next + outage)
			}
			next += outage + g.dwell()
		}
		outages = append(outages, mine...)
		for _, tn := range tunnels {
			g.emit(Event{At: tn[0], Kind: KindBlackout, Duration: tn[1] - tn[0]})
		}
		if c == 0 {
			for _, t := range moves {
				g.emit(Event{At: t, Kind: KindServerMove})
			}
		}
		// Stable: at one instant, a link event stays after the handover
		// that brought it.
		slices.SortStableFunc(g.tr.Events, func(a, b Event) int { return cmp.Compare(a.At, b.At) })
		g.emit(Event{At: end, Kind: KindEnd})
		trs[c] = &g.tr
	}
	return trs
}

// settle moves a handover due at t, lasting outage, to the first time at
// or after t at which it starts outside every tunnel (a handover in a
// tunnel happens at its exit) and stays sep away from every other
// carrier's outage.
func settle(t, outage, sep time.Duration, tunnels, others [][2]time.Duration) time.Duration {
	for moved := true; moved; {
		moved = false
		for _, tn := range tunnels {
			if t >= tn[0] && t < tn[1] {
				t, moved = tn[1], true
			}
		}
		if sep < 0 {
			continue
		}
		for _, o := range others {
			if t < o[1]+sep && t+outage+sep > o[0] {
				t, moved = o[1]+sep, true
			}
		}
	}
	return t
}

// MultiProfiles returns the names of the shipped multi-carrier profiles:
// "hsr-300-dual".
func MultiProfiles() []string {
	ents, _ := profileFS.ReadDir("profiles")
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names
}

// MultiProfile parses the named shipped multi-carrier profile: a trace
// per carrier, in the order of their files' names. An unknown name
// yields an error that wraps fs.ErrNotExist.
func MultiProfile(name string) ([]*Trace, error) {
	dir := path.Join("profiles", name)
	ents, err := fs.Glob(profileFS, path.Join(dir, "*.trace"))
	if err != nil || len(ents) == 0 {
		return nil, fmt.Errorf("trace: no multi-carrier profile %q (have %v): %w", name, MultiProfiles(), fs.ErrNotExist)
	}
	var trs []*Trace
	for _, file := range ents {
		src, err := profileFS.ReadFile(file)
		if err != nil {
			return nil, err
		}
		tr, err := parse(bytes.NewReader(src), path.Join(name, path.Base(file)))
		if err != nil {
			return nil, err
		}
		trs = append(trs, tr)
	}
	return trs, nil
}
