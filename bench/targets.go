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
	t := target{name: "roam loses and duplicates no byte and shows no application error, in every scenario", correctness: true, met: true}
	var bad []string
	for _, w := range rows {
		if w.system != "roam" {
			continue
		}
		label := w.scenario
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
	return out
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
