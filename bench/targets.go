package main

import (
	"fmt"
	"math"
	"strings"
)

// target is one of the targets for roam, checked against a run.
type target struct {
	name        string
	met         bool
	measured    bool   // false: the run did not measure it (filtered out, failed)
	detail      string // the figures
	correctness bool   // missing it fails the command
}

func findRow(rows []*row, scenario, system, variant string) *row {
	for _, w := range rows {
		if w.scenario == scenario && w.system == system && w.variant == variant && len(w.runs) > 0 {
			return w
		}
	}
	return nil
}

func checkTargets(rows []*row) []target {
	var out []target

	// Zero bytes lost or duplicated and zero application errors, in every
	// scenario roam ran.
	t := target{name: "roam loses and duplicates no byte and shows no application error, in every scenario (roam-dual too)", correctness: true, met: true}
	var bad []string
	for _, w := range rows {
		if w.system != "roam" && w.system != "roam-dual" && w.system != "roam-agg" {
			continue
		}
		label := w.scenario
		if w.system != "roam" {
			label += " " + w.system
		}
		if w.variant != "" {
			label += " (" + w.variant + ")"
		}
		if len(w.runs) == 0 {
			if strings.HasPrefix(w.why, "failed") {
				bad = append(bad, label+": "+w.why)
			}
			continue
		}
		t.measured = true
		lost := w.sum(func(r laneResult) int64 { return int64(r.Lost + r.Corrupt) })
		dup := w.sum(func(r laneResult) int64 { return int64(r.Duplicated) })
		errs := w.sum(func(r laneResult) int64 { return r.AppErrors })
		if lost != 0 || dup != 0 || errs != 0 {
			bad = append(bad, fmt.Sprintf("%s: %d lost, %d duplicated, %d errors", label, lost, dup, errs))
		}
	}
	if len(bad) > 0 {
		t.met = false
		t.detail = fmt.Sprint(bad)
	} else {
		t.detail = "0 lost, 0 duplicated, 0 errors"
	}
	out = append(out, t)

	hsr, still, tcp := findRow(rows, "hsr-300", "roam", ""), findRow(rows, "hsr-300", "roam", "still"), findRow(rows, "hsr-300", "tcp", "")
	t = target{name: "hsr-300: roam's goodput ≥ 95% of its own on the same link standing still (over the time the path is up)"}
	if hsr != nil && still != nil {
		r := hsr.upGoodput() / median(still.goodputs())
		t.measured, t.met = true, r >= 0.95
		t.detail = fmt.Sprintf("%.2f vs %.2f Mbit/s: %.0f%%", hsr.upGoodput(), median(still.goodputs()), 100*r)
	}
	out = append(out, t)
	t = target{name: "hsr-300: roam's goodput ≥ 2x TCP with reconnect"}
	if hsr != nil && tcp != nil {
		r := median(hsr.goodputs()) / median(tcp.goodputs())
		t.measured, t.met = true, r >= 2
		t.detail = fmt.Sprintf("%.2f vs %.2f Mbit/s: %.2fx", median(hsr.goodputs()), median(tcp.goodputs()), r)
	}
	out = append(out, t)

	t = target{name: "50 NAT rebindings in 3 s: roam takes ≤ 2x its calm time for the same bytes"}
	nat, natCalm := findRow(rows, "nat-rebind", "roam", ""), findRow(rows, "nat-rebind", "roam", "calm")
	if nat != nil && natCalm != nil {
		d, ok := nat.doneSeconds()
		c, okc := natCalm.doneSeconds()
		t.measured = okc
		if ok && okc {
			t.met = d/c <= 2
			t.detail = fmt.Sprintf("%.2f s vs %.2f s: %.2fx", d, c, d/c)
		} else {
			t.detail = "roam did not finish the transfer"
		}
		if q, qc := findRow(rows, "nat-rebind", "quic", ""), findRow(rows, "nat-rebind", "quic", "calm"); q != nil && qc != nil {
			if d, ok := q.doneSeconds(); ok {
				if c, ok := qc.doneSeconds(); ok {
					t.detail += fmt.Sprintf("; quic-go %.2fx", d/c)
				}
			} else {
				t.detail += "; quic-go did not finish"
			}
		}
	}
	out = append(out, t)

	t = target{name: "calm link: roam's throughput within 5% of raw quic-go"}
	calm, calmQ := findRow(rows, "calm", "roam", ""), findRow(rows, "calm", "quic", "")
	if calm != nil && calmQ != nil {
		r := median(calm.goodputs()) / median(calmQ.goodputs())
		t.measured, t.met = true, math.Abs(r-1) <= 0.05 || r > 1
		t.detail = fmt.Sprintf("%.2f vs %.2f Mbit/s: %.3fx", median(calm.goodputs()), median(calmQ.goodputs()), r)
	}
	out = append(out, t)
	return append(out, dualTargets(rows)...)
}

// dualTargets are issue 14's targets for roam over two paths at once, at
// a handover of one carrier in hsr-dual.
func dualTargets(rows []*row) []target {
	dual, one := findRow(rows, "hsr-dual", "roam-dual", ""), findRow(rows, "hsr-dual", "roam", "")
	mp := findRow(rows, "hsr-dual", "mptcp-dual", "")
	t := target{name: "hsr-dual: roam-dual's stall at a carrier's handover: p50 ≤ 1 RTT and p99 ≤ 3 RTT of the surviving path"}
	if dual != nil {
		if st := rttsOf(dual.runs); len(st) > 0 {
			p50, p99 := quantile(st, .5), quantile(st, .99)
			t.measured, t.met = true, p50 <= 1 && p99 <= 3
			t.detail = fmt.Sprintf("p50 %.1f RTT, p99 %.1f RTT (%s ms)", p50, p99, stallCell(dual))
		}
	}
	out := []target{t}
	// Goodput is what PathAggregate is for: it counts, if it ran.
	agg := dual
	if a := findRow(rows, "hsr-dual", "roam-agg", ""); a != nil {
		agg = a
	}
	t = target{name: "hsr-dual: roam's goodput over both paths (roam-agg, PathAggregate) ≥ 1.3x roam's on one path, and ≥ MPTCP's on both paths"}
	if agg != nil && one != nil {
		g, g1 := median(agg.goodputs()), median(one.goodputs())
		t.measured, t.met = true, g >= 1.3*g1
		t.detail = fmt.Sprintf("%.2f vs %.2f Mbit/s: %.2fx", g, g1, g/g1)
		if mp != nil {
			gm := median(mp.goodputs())
			t.met = t.met && g >= gm
			t.detail += fmt.Sprintf("; MPTCP %.2f Mbit/s: %.2fx", gm, g/gm)
		} else {
			t.detail += "; MPTCP did not run"
		}
	}
	out = append(out, t)
	t = target{name: "hsr-dual: roam-dual sends ≤ 10% of its bytes twice (sent / delivered ≤ 1.1x roam's on one path)"}
	if dual != nil && one != nil {
		r, r1 := dual.sentPerDelivered(), one.sentPerDelivered()
		if !math.IsNaN(r) && !math.IsNaN(r1) {
			t.measured, t.met = true, r <= 1.1*r1
			t.detail = fmt.Sprintf("%.3f vs %.3f: %+.1f%%", r, r1, 100*(r/r1-1))
		}
	}
	return append(out, t)
}

func (t target) mark() string {
	switch {
	case !t.measured:
		return "not measured"
	case t.met:
		return "met"
	}
	return "**missed**"
}
