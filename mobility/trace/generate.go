package trace

import (
	"math"
	"math/rand/v2"
	"time"
)

// Range is a closed interval from which the generator draws uniformly.
type Range[T ~int64 | ~float64] struct{ Min, Max T }

func (r Range[T]) draw(rng *rand.Rand) T {
	if r.Max <= r.Min {
		return r.Min
	}
	return r.Min + T(rng.Float64()*float64(r.Max-r.Min))
}

// Model describes a ride from which Generate draws traces. Every zero
// field takes its value from HSR300, so the zero Model is the hsr-300
// profile's model. A negative Min in TunnelEvery or ServerMoveEvery turns
// tunnels or server moves off.
type Model struct {
	// Duration is the length of the scenario. Default 600 s.
	Duration time.Duration
	// SpeedKmh is the train's speed. Default 300.
	SpeedKmh float64
	// CellSpacing is the distance in metres between handovers along the
	// track; with SpeedKmh it sets the handover interval. Default
	// 1000–1600 m, a handover every 12–19 s at 300 km/h.
	CellSpacing Range[float64]
	// Outage is a handover's interruption. Default 80–300 ms.
	Outage Range[time.Duration]
	// RTT is a cell's round-trip time. Default 50–150 ms.
	RTT Range[time.Duration]
	// Jitter is the jitter as a fraction of the cell's RTT. Default 0.15.
	Jitter float64
	// Loss is a cell's random loss. Default 0.005–0.03.
	Loss Range[float64]
	// RateMbps is a cell's throughput in Mbit/s. Default 2–20.
	RateMbps Range[float64]
	// TunnelEvery is the time from one tunnel's exit to the next
	// tunnel's entry. Default 60–240 s.
	TunnelEvery Range[time.Duration]
	// TunnelLength is a tunnel's blackout. Default 2–30 s.
	TunnelLength Range[time.Duration]
	// ServerMoveEvery is the time between server moves. Default: never.
	ServerMoveEvery Range[time.Duration]
}

// HSR300 returns the model of the hsr-300 profile: a train at 300 km/h on
// LTE, with the figures and sources given in the header of hsr-300.trace.
func HSR300() Model {
	return Model{
		Duration:        600 * time.Second,
		SpeedKmh:        300,
		CellSpacing:     Range[float64]{1000, 1600},
		Outage:          Range[time.Duration]{80 * time.Millisecond, 300 * time.Millisecond},
		RTT:             Range[time.Duration]{50 * time.Millisecond, 150 * time.Millisecond},
		Jitter:          0.15,
		Loss:            Range[float64]{0.005, 0.03},
		RateMbps:        Range[float64]{2, 20},
		TunnelEvery:     Range[time.Duration]{60 * time.Second, 240 * time.Second},
		TunnelLength:    Range[time.Duration]{2 * time.Second, 30 * time.Second},
		ServerMoveEvery: Range[time.Duration]{-1, -1},
	}
}

func (m Model) withDefaults() Model {
	d := HSR300()
	setDefault(&m.Duration, d.Duration)
	setDefault(&m.SpeedKmh, d.SpeedKmh)
	setDefault(&m.CellSpacing, d.CellSpacing)
	setDefault(&m.Outage, d.Outage)
	setDefault(&m.RTT, d.RTT)
	setDefault(&m.Jitter, d.Jitter)
	setDefault(&m.Loss, d.Loss)
	setDefault(&m.RateMbps, d.RateMbps)
	setDefault(&m.TunnelEvery, d.TunnelEvery)
	setDefault(&m.TunnelLength, d.TunnelLength)
	setDefault(&m.ServerMoveEvery, d.ServerMoveEvery)
	return m
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Generate draws a trace from the model. The same model and seed always
// give the same trace. Times are whole milliseconds and figures are
// rounded, so the trace reads well and survives WriteTo and Parse.
func Generate(m Model, seed uint64) *Trace {
	m = m.withDefaults()
	g := gen{m: m, rng: rand.New(rand.NewPCG(seed, 0x726f616d2d747263))} // "roam-trc"
	return g.run()
}

type gen struct {
	m   Model
	rng *rand.Rand
	tr  Trace
}

func (g *gen) emit(e Event) { g.tr.Events = append(g.tr.Events, e) }

// cell emits the link event of a new cell.
func (g *gen) cell(at time.Duration) {
	rtt := roundTo(g.m.RTT.draw(g.rng), time.Millisecond)
	g.emit(Event{At: at, Kind: KindLink, Set: FieldRTT | FieldJitter | FieldLoss | FieldRate, Link: Link{
		RTT:    rtt,
		Jitter: roundTo(time.Duration(float64(rtt)*g.m.Jitter), time.Millisecond),
		Loss:   math.Round(g.m.Loss.draw(g.rng)*1e4) / 1e4,
		Rate:   int64(math.Round(g.m.RateMbps.draw(g.rng)*10)) * 100_000,
	}})
}

// dwell is the time the train spends in one cell.
func (g *gen) dwell() time.Duration {
	metresPerSecond := g.m.SpeedKmh / 3.6
	secs := g.m.CellSpacing.draw(g.rng) / metresPerSecond
	return roundTo(time.Duration(secs*float64(time.Second)), time.Millisecond)
}

// after draws a gap from r, or reports that r is turned off.
func (g *gen) after(t time.Duration, r Range[time.Duration]) time.Duration {
	if r.Min < 0 {
		return math.MaxInt64
	}
	return t + roundTo(r.draw(g.rng), time.Millisecond)
}

func (g *gen) run() *Trace {
	end := roundTo(g.m.Duration, time.Millisecond)
	g.cell(0)
	nextHO := g.dwell()
	nextTunnel := g.after(0, g.m.TunnelEvery)
	nextMove := g.after(0, g.m.ServerMoveEvery)
	for {
		t := min(nextHO, nextTunnel, nextMove)
		if t >= end {
			break
		}
		switch t {
		case nextTunnel:
			length := min(roundTo(g.m.TunnelLength.draw(g.rng), time.Millisecond), end-t)
			g.emit(Event{At: t, Kind: KindBlackout, Duration: length})
			exit := t + length
			// A handover or move that falls inside the tunnel happens at its exit.
			nextHO, nextMove = max(nextHO, exit), max(nextMove, exit)
			nextTunnel = g.after(exit, g.m.TunnelEvery)
		case nextHO:
			outage := roundTo(g.m.Outage.draw(g.rng), time.Millisecond)
			g.emit(Event{At: t, Kind: KindHandover, Duration: outage})
			attached := t + outage
			if attached < end {
				g.cell(attached)
			}
			nextHO = attached + g.dwell()
			nextTunnel, nextMove = max(nextTunnel, attached), max(nextMove, attached)
		default:
			g.emit(Event{At: t, Kind: KindServerMove})
			nextMove = g.after(t, g.m.ServerMoveEvery)
		}
	}
	g.emit(Event{At: end, Kind: KindEnd})
	return &g.tr
}

func roundTo(d, unit time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d.Round(unit)
}
