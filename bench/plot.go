package main

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writePlots draws, per scenario, the goodput of every system over time
// with its disruptions marked (<scenario>-goodput.png), and the
// distribution of its stalls per system (<scenario>-stalls.png). It
// returns the files written.
func writePlots(dir string, scs []*scenario, rows []*row) ([]string, error) {
	var files []string
	for _, sc := range scs {
		var mine []*row
		for _, w := range rows {
			if w.scenario == sc.name && len(w.runs) > 0 {
				mine = append(mine, w)
			}
		}
		if len(mine) == 0 {
			continue
		}
		name := filepath.Join(dir, sc.name+"-goodput.png")
		if err := plotGoodput(name, sc, mine); err != nil {
			return files, fmt.Errorf("%s: %w", name, err)
		}
		files = append(files, name)
		if len(stallsOf(mine[0].runs)) == 0 {
			continue
		}
		name = filepath.Join(dir, sc.name+"-stalls.png")
		if err := plotStalls(name, sc, mine); err != nil {
			return files, fmt.Errorf("%s: %w", name, err)
		}
		files = append(files, name)
	}
	return files, nil
}

// systemColor gives each system its colour on every plot; a twin is
// drawn dashed in its system's colour. A dual-path system is a darker
// shade of its single-path self, drawn thicker.
func systemColor(name string) color.Color {
	if base, ok := strings.CutSuffix(name, "-dual"); ok {
		c := color.RGBAModel.Convert(systemColor(base)).(color.RGBA)
		return color.RGBA{R: c.R / 2, G: c.G / 2, B: c.B / 2, A: 255}
	}
	return plotutil.Color(slices.IndexFunc(allSystems(), func(s system) bool { return s.name == name }))
}

func rowLabel(w *row) string {
	if w.variant != "" {
		return w.system + " (" + w.variant + ")"
	}
	return w.system
}

// plotGoodput draws the first run of each row.
func plotGoodput(file string, sc *scenario, rows []*row) error {
	p := plot.New()
	p.Title.Text = sc.name + ": goodput over time (run 1)"
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = "goodput (Mbit/s)"
	p.Legend.Top = true
	var top float64
	for _, w := range rows {
		r := w.runs[0]
		xys := make(plotter.XYs, len(r.Series))
		for j, v := range r.Series {
			xys[j] = plotter.XY{X: (float64(j) + 0.5) * r.BinSeconds, Y: v}
			top = max(top, v)
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color = systemColor(w.system)
		if w.variant != "" {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		if strings.HasSuffix(w.system, "-dual") {
			l.Width = vg.Points(2)
		}
		p.Add(l)
		p.Legend.Add(rowLabel(w), l)
	}
	// Disruptions: grey for handovers and moves (dotted: a handover of a
	// path other than the first), black for tunnels.
	for _, m := range rows[0].runs[0].Marks {
		for _, x := range []float64{m.At, m.At + m.Outage/1e3} {
			l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: top * 1.05}})
			if err != nil {
				return err
			}
			l.Color = color.Gray{Y: 160}
			if m.Path > 0 {
				l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
			}
			if m.Kind == "tunnel" {
				l.Color = color.Black
			}
			l.Width = vg.Points(0.5)
			p.Add(l)
			if m.Outage == 0 {
				break
			}
		}
	}
	p.Y.Min = 0
	return p.Save(10*vg.Inch, 5*vg.Inch, file)
}

// plotStalls draws a box plot per row of its stalls, on a log scale.
func plotStalls(file string, sc *scenario, rows []*row) error {
	p := plot.New()
	p.Title.Text = sc.name + ": stall per disruption, all runs and flows"
	p.Y.Label.Text = "stall (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	var names []string
	for _, w := range rows {
		vals := plotter.Values(stallsOf(w.runs))
		if len(vals) == 0 {
			continue
		}
		for i := range vals {
			vals[i] = max(vals[i], 1) // a log scale has no zero
		}
		box, err := plotter.NewBoxPlot(vg.Points(20), float64(len(names)), vals)
		if err != nil {
			return err
		}
		box.FillColor = systemColor(w.system)
		p.Add(box)
		names = append(names, rowLabel(w))
	}
	p.NominalX(names...)
	return p.Save(vg.Length(1.6*float64(len(names))+2)*vg.Inch, 5*vg.Inch, file)
}

// logTicks labels 1, 2 and 5 times each power of ten: plot.LogTicks
// labels only the powers, which leaves most stall plots with one label.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for e := math.Floor(math.Log10(lo)); math.Pow(10, e) <= hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			if v := m * math.Pow(10, e); v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
			}
		}
	}
	return ts
}
