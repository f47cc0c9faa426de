package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// stallsOf pools the stalls of rs, in ms.
func stallsOf(rs []laneResult) []float64 {
	var out []float64
	for _, r := range rs {
		for _, s := range r.Stalls {
			out = append(out, s.Stall)
		}
	}
	return out
}

// beyondOf pools the stalls of rs past their outages, in RTTs.
func beyondOf(rs []laneResult) []float64 {
	var out []float64
	for _, r := range rs {
		for _, s := range r.Stalls {
			out = append(out, s.beyondRTTs())
		}
	}
	return out
}

// rttsOf pools the stalls of rs in RTTs (of the surviving path, with
// several paths).
func rttsOf(rs []laneResult) []float64 {
	var out []float64
	for _, r := range rs {
		for _, s := range r.Stalls {
			out = append(out, s.rtts())
		}
	}
	return out
}

// quantile returns the q-quantile of xs by nearest rank; NaN if empty.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	return s[max(int(math.Ceil(q*float64(len(s))))-1, 0)]
}

func median(xs []float64) float64 { return quantile(xs, .5) }

// row is a line of the table: one system on one scenario (or its twin),
// over all runs.
type row struct {
	scenario, system, variant string
	runs                      []laneResult
	why                       string // skipped or failed, if every run was
}

func rowsOf(results []laneResult) []*row {
	var rows []*row
	index := map[string]*row{}
	for _, r := range results {
		k := r.Scenario + "\x00" + r.System + "\x00" + r.Variant
		w, ok := index[k]
		if !ok {
			w = &row{scenario: r.Scenario, system: r.System, variant: r.Variant}
			index[k] = w
			rows = append(rows, w)
		}
		switch {
		case r.Skipped != "":
			w.why = "cannot run: " + r.Skipped
		case r.Failed != "":
			w.why = "failed: " + r.Failed
		default:
			w.runs = append(w.runs, r)
		}
	}
	return rows
}

func (w *row) goodputs() []float64 {
	var xs []float64
	for _, r := range w.runs {
		xs = append(xs, r.Goodput)
	}
	return xs
}

// upGoodput is the median goodput over the time the path was up.
func (w *row) upGoodput() float64 {
	var xs []float64
	for _, r := range w.runs {
		if r.UpSeconds > 0 {
			xs = append(xs, r.Goodput*r.Seconds/r.UpSeconds)
		}
	}
	return median(xs)
}

func (w *row) doneSeconds() (float64, bool) {
	var xs []float64
	for _, r := range w.runs {
		if r.DoneSeconds == 0 {
			return 0, false
		}
		xs = append(xs, r.DoneSeconds)
	}
	return median(xs), len(xs) > 0
}

func (w *row) sum(f func(laneResult) int64) int64 {
	var n int64
	for _, r := range w.runs {
		n += f(r)
	}
	return n
}

func fmtNum(x float64, prec int) string {
	if math.IsNaN(x) {
		return "—"
	}
	return strconv.FormatFloat(x, 'f', prec, 64)
}

// writeTable writes the Markdown table of rows.
func writeTable(w io.Writer, scs []*scenario, rows []*row) {
	fmt.Fprintln(w, "| scenario | system | goodput (Mbit/s) | stall p50 / p99 (ms) | beyond outage p50 / p99 (RTT) | lost / dup (bytes) | app errors | reconnects | CPU | mem/flow |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, sc := range scs {
		for _, wr := range rows {
			if wr.scenario != sc.name {
				continue
			}
			name := wr.scenario
			if wr.variant != "" {
				name += " (" + wr.variant + ")"
			}
			if len(wr.runs) == 0 {
				fmt.Fprintf(w, "| %s | %s | %s | | | | | | | |\n", name, wr.system, wr.why)
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, wr.system,
				goodputCell(sc, wr), stallCell(wr), beyondCell(wr), lossCell(wr),
				strconv.FormatInt(wr.sum(func(r laneResult) int64 { return r.AppErrors }), 10),
				reconnectCell(wr), cpuCell(sc, wr), memCell(wr))
		}
	}
}

func goodputCell(sc *scenario, w *row) string {
	g := fmtNum(median(w.goodputs()), 2)
	if sc.work.want > 0 {
		if d, ok := w.doneSeconds(); ok {
			return fmt.Sprintf("%s (%d MB in %.2f s)", g, sc.work.want>>20, d)
		}
		var got uint64
		for _, r := range w.runs {
			got += r.Bytes
		}
		return fmt.Sprintf("not done in %v (%.0f%%)", sc.length, 100*float64(got)/float64(sc.work.want*uint64(len(w.runs)*sc.flows)))
	}
	if len(w.runs) > 1 {
		gs := w.goodputs()
		g += fmt.Sprintf(" (%s–%s)", fmtNum(slices.Min(gs), 2), fmtNum(slices.Max(gs), 2))
	}
	for _, r := range w.runs {
		if r.Note != "" {
			g += " (" + r.Note + ")"
			break
		}
	}
	if sc.flows > 1 {
		alive, all := 0, 0
		for _, r := range w.runs {
			alive += r.FlowsComplete
			all += r.Flows
		}
		g += fmt.Sprintf("; %d/%d flows alive", alive, all)
	}
	return g
}

func stallCell(w *row) string {
	st := stallsOf(w.runs)
	if len(st) == 0 {
		return "—"
	}
	return fmt.Sprintf("%s / %s", fmtNum(quantile(st, .5), 0), fmtNum(quantile(st, .99), 0))
}

func beyondCell(w *row) string {
	b := beyondOf(w.runs)
	if len(b) == 0 {
		return "—"
	}
	return fmt.Sprintf("%s / %s", fmtNum(quantile(b, .5), 1), fmtNum(quantile(b, .99), 1))
}

func lossCell(w *row) string {
	lost := w.sum(func(r laneResult) int64 { return int64(r.Lost) })
	dup := w.sum(func(r laneResult) int64 { return int64(r.Duplicated) })
	bad := w.sum(func(r laneResult) int64 { return int64(r.Corrupt) })
	s := fmt.Sprintf("%d / %d", lost, dup)
	if bad > 0 {
		s += fmt.Sprintf(" (%d misplaced)", bad)
	}
	return s
}

func reconnectCell(w *row) string {
	s := strconv.FormatInt(w.sum(func(r laneResult) int64 { return r.Reconnects }), 10)
	if res := w.sum(func(r laneResult) int64 { return r.Resumes }); res > 0 {
		s += fmt.Sprintf(" (%d resumed inside)", res)
	}
	return s
}

func cpuCell(sc *scenario, w *row) string {
	var xs []float64
	for _, r := range w.runs {
		if r.CPUSeconds <= 0 {
			return "—"
		}
		if sc.flows > 1 {
			xs = append(xs, r.CPUSeconds*1e3/float64(r.Flows))
		} else if r.Bytes > 0 {
			xs = append(xs, r.CPUSeconds*1e3/(float64(r.Bytes)/1e6))
		}
	}
	if len(xs) == 0 {
		return "—"
	}
	if sc.flows > 1 {
		return fmtNum(median(xs), 2) + " ms/flow"
	}
	return fmtNum(median(xs), 2) + " ms/MB"
}

func memCell(w *row) string {
	var xs []float64
	for _, r := range w.runs {
		if r.HeapPerFlow == 0 {
			return "—"
		}
		xs = append(xs, r.HeapPerFlow)
	}
	m := median(xs)
	if m < 1024 {
		return "< 1 KiB" // the heap's noise is larger than the flow
	}
	if m >= 1<<20 {
		return fmtNum(m/(1<<20), 1) + " MiB"
	}
	return fmtNum(m/1024, 1) + " KiB"
}

// writeDualTable writes, for each scenario over several paths, what the
// issue's targets for using them at once ask: per handover of one
// carrier (tunnels cut every path, and are not counted), the stall in ms
// and in RTTs of the path that survives it, the goodput, and what the
// client sent over what arrived.
func writeDualTable(w io.Writer, scs []*scenario, rows []*row) {
	for _, sc := range scs {
		paths := pathsOf(sc.events)
		if paths < 2 {
			continue
		}
		handovers := 0
		for _, m := range marksOf(sc.events, sc.tunnelStalls) {
			if m.stall && m.at+m.outage < sc.length {
				handovers++
			}
		}
		fmt.Fprintf(w, "\n### %s: %d paths, %d handovers of one carrier\n\n", sc.name, paths, handovers)
		fmt.Fprintln(w, "| system | paths used | stall p50 / p99 (ms) | stall p50 / p99 (RTTs of the surviving path) | goodput (Mbit/s) | sent / delivered |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|")
		for _, wr := range rows {
			if wr.scenario != sc.name || wr.variant != "" {
				continue
			}
			used := "1 (the first)"
			if strings.HasSuffix(wr.system, "-dual") || wr.system == "roam-agg" {
				used = strconv.Itoa(paths)
			}
			if len(wr.runs) == 0 {
				fmt.Fprintf(w, "| %s | %s | %s | | | |\n", wr.system, used, wr.why)
				continue
			}
			st := rttsOf(wr.runs)
			rtts := "—"
			if len(st) > 0 {
				rtts = fmt.Sprintf("%s / %s", fmtNum(quantile(st, .5), 1), fmtNum(quantile(st, .99), 1))
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", wr.system, used, stallCell(wr), rtts,
				fmtNum(median(wr.goodputs()), 2), fmtNum(wr.sentPerDelivered(), 3))
		}
	}
}

// sentPerDelivered is the median over the runs of what the client sent
// over what arrived.
func (w *row) sentPerDelivered() float64 {
	var xs []float64
	for _, r := range w.runs {
		if x := r.sentPerDelivered(); !math.IsNaN(x) {
			xs = append(xs, x)
		}
	}
	return median(xs)
}

// writeRaw writes results.json (everything, with series and stalls),
// results.csv (a line per lane and run) and stalls.csv (a line per stall).
func writeRaw(dir string, results []laneResult) error {
	b, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return err
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	u := func(x uint64) string { return strconv.FormatUint(x, 10) }
	i := func(x int64) string { return strconv.FormatInt(x, 10) }
	lanes := [][]string{{"scenario", "system", "variant", "run", "skipped", "failed", "seconds", "up_seconds", "bytes",
		"goodput_mbps", "done_seconds", "lost_bytes", "duplicated_bytes", "corrupt_bytes", "app_errors", "reconnects",
		"resumes", "flows", "flows_complete", "cpu_seconds", "heap_per_flow_bytes", "sent_bytes", "sent_per_delivered"}}
	stalls := [][]string{{"scenario", "system", "variant", "run", "at_s", "kind", "flow", "outage_ms", "stall_ms", "rtt_ms",
		"beyond_outage_rtts", "path", "stall_rtts"}}
	for _, r := range results {
		lanes = append(lanes, []string{r.Scenario, r.System, r.Variant, strconv.Itoa(r.Run), r.Skipped, r.Failed,
			f(r.Seconds), f(r.UpSeconds), u(r.Bytes), f(r.Goodput), f(r.DoneSeconds), u(r.Lost), u(r.Duplicated),
			u(r.Corrupt), i(r.AppErrors), i(r.Reconnects), i(r.Resumes), strconv.Itoa(r.Flows),
			strconv.Itoa(r.FlowsComplete), f(r.CPUSeconds), f(r.HeapPerFlow), u(r.SentBytes), nanEmpty(r.sentPerDelivered())})
		for _, s := range r.Stalls {
			stalls = append(stalls, []string{r.Scenario, r.System, r.Variant, strconv.Itoa(r.Run), f(s.At), s.Kind,
				strconv.Itoa(s.Flow), f(s.Outage), f(s.Stall), f(s.RTT), f(s.beyondRTTs()), strconv.Itoa(s.Path), f(s.rtts())})
		}
	}
	if err := writeCSV(filepath.Join(dir, "results.csv"), lanes); err != nil {
		return err
	}
	return writeCSV(filepath.Join(dir, "stalls.csv"), stalls)
}

// nanEmpty formats x, or "" for NaN (not measured).
func nanEmpty(x float64) string {
	if math.IsNaN(x) {
		return ""
	}
	return strconv.FormatFloat(x, 'f', -1, 64)
}

func writeCSV(name string, recs [][]string) error {
	var b strings.Builder
	w := csv.NewWriter(&b)
	if err := w.WriteAll(recs); err != nil {
		return err
	}
	return os.WriteFile(name, []byte(b.String()), 0o644)
}
