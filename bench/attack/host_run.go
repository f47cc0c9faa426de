package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// hostResult is one attack's row.
type hostResult struct {
	attack                  string
	flood                   bool
	calm, during            float64 // honest echo throughput, MB/s
	echoes, failed          int64
	freshOK, freshFail      int64
	baseHeap, peakHeap      uint64
	baseGoroutines, peakGor int
	recovered               time.Duration // -1: not within recoverWait
	endHeap                 uint64        // at the last look of the recovery
	endGoroutines           int
	note, lastErr           string
}

// goroutineDescriptor is what the runtime keeps, for good, of every
// goroutine that ever ran at once: 494 bytes each, measured on Go 1.26
// (5,000 goroutines that ended left 2.4 MB of live heap). After a peak of
// thousands of flows each served by a goroutine, a baseline of a few MiB
// cannot come back to within 10%; the recovery allows for them.
const goroutineDescriptor = 512

// recoverWait bounds the wait for the victim to return to its baseline.
const recoverWait = 30 * time.Second

// runHostAttack runs one attack against a fresh victim beside an honest
// client: calm, then the attack, then the recovery.
func runHostAttack(a hostAttack, calm, duration time.Duration) (hostResult, error) {
	r := hostResult{attack: a.name, flood: a.flood, recovered: -1}
	b, err := startVictim()
	if err != nil {
		return r, err
	}
	defer b.stop()
	client, err := b.newClient()
	if err != nil {
		return r, err
	}
	defer client.Close()

	// Calm: the honest client alone.
	var calmSt honestStats
	ctx, cancel := context.WithTimeout(context.Background(), calm)
	start := time.Now()
	b.honest(ctx, client, &calmSt)
	cancel()
	r.calm = float64(calmSt.bytes.Load()) / time.Since(start).Seconds() / 1e6
	time.Sleep(200 * time.Millisecond) // the last flows end
	base, err := b.stats(true)
	if err != nil {
		return r, err
	}
	r.baseHeap, r.baseGoroutines = base.LiveHeap, base.Goroutines
	r.peakGor = base.Goroutines

	// The attack, with the honest client beside it.
	var st honestStats
	ctx, cancel = context.WithTimeout(context.Background(), duration)
	defer cancel()
	attackDone := make(chan error, 1)
	go func() {
		note, err := a.run(ctx, b.addr)
		r.note = note
		attackDone <- err
	}()
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		for ctx.Err() == nil {
			if s, err := b.stats(false); err == nil {
				r.peakHeap = max(r.peakHeap, s.LiveHeap)
				r.peakGor = max(r.peakGor, s.PeakGoroutines)
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	start = time.Now()
	b.honest(ctx, client, &st)
	r.during = float64(st.bytes.Load()) / time.Since(start).Seconds() / 1e6
	if err := <-attackDone; err != nil {
		return r, fmt.Errorf("%s: %w", a.name, err)
	}
	<-sampleDone
	r.echoes, r.failed = st.echoes.Load(), st.failed.Load()
	r.freshOK, r.freshFail = st.freshOK.Load(), st.freshFail.Load()
	if e := st.lastErr.Load(); e != nil {
		r.lastErr = *e
	}

	if os.Getenv("ATTACK_PAUSE") != "" { // look at the victim: go tool pprof <stats>/debug/pprof/heap
		fmt.Fprintln(os.Stderr, "victim:", b.info.Stats)
		time.Sleep(20 * time.Second)
	}
	// Recovery: heap and goroutines back within 10% of the baseline.
	ended := time.Now()
	for time.Since(ended) < recoverWait {
		s, err := b.stats(true)
		if err == nil {
			r.endHeap, r.endGoroutines = s.LiveHeap, s.Goroutines
			r.peakHeap = max(r.peakHeap, s.LiveHeap)
			r.peakGor = max(r.peakGor, s.PeakGoroutines)
			descriptors := float64(goroutineDescriptor * max(0, r.peakGor-base.PeakGoroutines))
			if float64(s.LiveHeap) <= max(1.1*float64(base.LiveHeap), float64(base.LiveHeap)+descriptors) &&
				float64(s.Goroutines) <= 1.1*float64(base.Goroutines) {
				r.recovered = time.Since(ended)
				break
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return r, nil
}

// verdict checks a row against the targets.
func (r hostResult) verdict(hostBuffer uint64) string {
	var misses []string
	want := 0.5
	if r.flood {
		want = 0.25
	}
	if r.failed > 0 {
		misses = append(misses, "honest failures")
	}
	if r.calm > 0 && r.during < want*r.calm {
		misses = append(misses, fmt.Sprintf("throughput < %.0f%% of calm", want*100))
	}
	limit := 2 * hostBuffer
	if r.flood {
		limit = 256 << 20
	}
	if r.peakHeap > limit {
		misses = append(misses, "heap")
	}
	if r.recovered < 0 || r.recovered > 10*time.Second {
		misses = append(misses, "recovery > 10 s")
	}
	if len(misses) == 0 {
		return "ok"
	}
	return "MISS: " + strings.Join(misses, ", ")
}

// writeHostReport writes the rows as a table, aligned or in Markdown.
func writeHostReport(w io.Writer, rows []hostResult, hostBuffer uint64, markdown bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	sep, end := "\t", "\n"
	if markdown {
		tw.Init(w, 0, 0, 0, ' ', tabwriter.DiscardEmptyColumns)
		sep, end = " | ", " |\n"
		fmt.Fprint(tw, "| ")
	}
	fmt.Fprint(tw, strings.Join([]string{"attack on a Host", "honest MB/s calm → during", "echoes ok/failed", "new dials ok/failed",
		"live heap base → peak", "goroutines base → peak", "recovered in", "attack", "verdict"}, sep), end)
	if markdown {
		fmt.Fprint(tw, "|---|---|---|---|---|---|---|---|---|\n")
	}
	for _, r := range rows {
		rec := fmt.Sprintf("not in 30 s (%.1f MiB, %d)", float64(r.endHeap)/(1<<20), r.endGoroutines)
		if r.recovered >= 0 {
			rec = r.recovered.Round(10 * time.Millisecond).String()
		}
		if markdown {
			fmt.Fprint(tw, "| ")
		}
		fmt.Fprint(tw, strings.Join([]string{r.attack,
			fmt.Sprintf("%.1f → %.1f (%.0f%%)", r.calm, r.during, 100*r.during/max(r.calm, 1e-9)),
			fmt.Sprintf("%d/%d", r.echoes, r.failed), fmt.Sprintf("%d/%d", r.freshOK, r.freshFail),
			fmt.Sprintf("%.1f → %.1f MiB", float64(r.baseHeap)/(1<<20), float64(r.peakHeap)/(1<<20)),
			fmt.Sprintf("%d → %d", r.baseGoroutines, r.peakGor), rec, r.note, r.verdict(hostBuffer)}, sep), end)
	}
	tw.Flush()
	for _, r := range rows {
		if r.lastErr != "" {
			fmt.Fprintf(w, "%s: last honest error: %s\n", r.attack, r.lastErr)
		}
	}
}
