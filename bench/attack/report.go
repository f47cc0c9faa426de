package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// A generic runner and report, for a target that can start a victim, run
// one honest round and list its attacks: the registry (registry.go). Each
// attack gets a fresh victim; a calm phase measures the honest client
// alone and the victim's baseline; the attack runs beside the honest
// client; the victim is then watched, collecting garbage before each look,
// until its goroutines and live heap are back within 10% of the baseline.
// The report exits 1 when an honest operation failed, a victim's live
// heap passed -max-heap, or a victim did not come back within -recover.

// options are the command's flags, as targets and attacks see them.
type options struct {
	quick    bool
	duration time.Duration // of each attack
	calm     time.Duration // of the calm phase before it
	recover  time.Duration // the longest wait for the victim to come back
	maxHeap  uint64        // the victim's live heap must stay under it
	sources  int           // loopback addresses an attack sends from
	verbose  bool
}

// Flags of the targets run by runTarget, beside main's.
var (
	recoverFlag = flag.Duration("recover", 20*time.Second, "the longest wait for a victim to come back after an attack")
	maxHeapFlag = flag.Uint64("max-heap", 256, "MiB of live heap a victim must stay under, unless the attack bounds it itself")
	sourcesFlag = flag.Int("sources", 1, "loopback addresses (127.0.0.2 on) each attack sends from (registry)")
	verboseFlag = flag.Bool("v", false, "say what each phase does (registry)")
)

// runTarget runs t's attacks whose names match, prints the report and
// exits: 1 if a hard target was missed.
func runTarget(name string, t target, match *regexp.Regexp, quick bool, calm, duration time.Duration) {
	o := &options{
		quick: quick, duration: duration, calm: calm,
		recover: *recoverFlag, maxHeap: *maxHeapFlag << 20, sources: *sourcesFlag, verbose: *verboseFlag,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var results []result
	for _, a := range t.attacks(o) {
		if !match.MatchString(a.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "attack: %s...\n", a.name)
		res, err := runAttack(ctx, t, a, o)
		if err != nil {
			fatal(fmt.Errorf("%s: %w", a.name, err))
		}
		results = append(results, res)
		if ctx.Err() != nil {
			break
		}
	}
	if report(os.Stdout, name, results, o) {
		os.Exit(1)
	}
	os.Exit(0)
}

// A target is a kind of victim: the attacks it knows, and how to start one.
type target interface {
	// start starts a fresh victim, ready for its honest client.
	start(ctx context.Context, o *options) (victim, error)
	attacks(o *options) []attack
}

// A victim is one running instance of a target.
type victim interface {
	// honest runs one round of the honest client: what a legitimate peer
	// does, on a fresh connection.
	honest(ctx context.Context) error
	// sample reads the victim's goroutines and heap, after a garbage
	// collection when collect is set.
	sample(ctx context.Context, collect bool) (sample, error)
	// refusals counts what the victim refused to keep its limits, by kind.
	refusals(ctx context.Context) (map[string]uint64, error)
	close() error
}

// An attack runs against a victim until ctx ends, then stops what it
// started, and says what it did.
type attack struct {
	name  string
	about string
	// handshakeFlood marks a flood of handshakes, for which the honest
	// client need keep only 25% of its calm throughput, not 50%.
	handshakeFlood bool
	// minDuration, when longer than -duration, is how long the attack
	// needs for a measurement of its own.
	minDuration time.Duration
	// holds, when set, says what the victim keeps of the attack by
	// design, so that its heap need not come back to the baseline.
	holds string
	// maxHeap, when set, is the attack's own bound on the victim's live
	// heap, instead of -max-heap: for an attack on memory that a target
	// bounds by its configuration (a Host's 2 × HostBuffer).
	maxHeap uint64
	run     func(ctx context.Context, v victim, o *options) (outcome, error)
}

// outcome is what an attack reports of itself.
type outcome struct {
	did   string // what the attacker managed, and what it was refused
	extra string // an attack's own measurement, such as a time to notice
	// missed, when set, is a target of the attack's own that it missed.
	missed string
}

func pick[T any](quick bool, short, long T) T {
	if quick {
		return short
	}
	return long
}

func (o *options) logf(format string, args ...any) {
	if o.verbose {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}

// sample is one look at a victim.
type sample struct {
	goroutines int
	heapLive   uint64 // as of the victim's last garbage collection
	rss        uint64
	// peakGoroutines is the most goroutines the victim has had at once,
	// when it keeps count (0 if not).
	peakGoroutines int
}

// roundStats counts the honest client's rounds in one phase.
type roundStats struct {
	ok, failed int
	elapsed    time.Duration
	lat        []time.Duration
	firstErr   error
}

func (h *roundStats) perSecond() float64 {
	if h.elapsed <= 0 {
		return 0
	}
	return float64(h.ok) / h.elapsed.Seconds()
}

func (h *roundStats) p99() time.Duration {
	if len(h.lat) == 0 {
		return 0
	}
	s := slices.Clone(h.lat)
	slices.Sort(s)
	return s[len(s)*99/100]
}

// result is what one attack came to.
type result struct {
	attack             attack
	calm, during       roundStats
	base, peak         sample // peak: the largest of each, during the attack
	after              sample // at the end of the recovery watch
	recovered          time.Duration
	recoveredOK        bool
	refusals           map[string]uint64
	outcome            outcome
	honestAfterFailure error
}

// runAttack runs a on a fresh victim of t: calm phase, attack beside the
// honest client, recovery watch.
func runAttack(ctx context.Context, t target, a attack, o *options) (result, error) {
	res := result{attack: a}
	o.logf("%s: starting a victim", a.name)
	v, err := t.start(ctx, o)
	if err != nil {
		return res, err
	}
	defer v.close()

	o.logf("%s: calm phase, %v", a.name, o.calm)
	res.calm = runHonest(ctx, v, o.calm, nil)
	if res.base, err = v.sample(ctx, true); err != nil {
		return res, err
	}
	before, err := v.refusals(ctx)
	if err != nil {
		return res, err
	}

	d := max(o.duration, a.minDuration)
	o.logf("%s: attack, %v", a.name, d)
	actx, cancel := context.WithTimeout(ctx, d)
	var attackErr error
	var wg sync.WaitGroup
	wg.Go(func() { res.outcome, attackErr = a.run(actx, v, o) })
	peak := make(chan sample, 1)
	wg.Go(func() { peak <- watchPeak(actx, v) })
	res.during = runHonest(actx, v, d, actx.Done())
	<-actx.Done()
	cancel()
	wg.Wait() // the attacker has stopped and let go of what it held
	res.peak = <-peak
	if attackErr != nil {
		return res, attackErr
	}

	o.logf("%s: recovery watch, at most %v", a.name, o.recover)
	start := time.Now()
	for {
		s, err := v.sample(ctx, true)
		if err != nil {
			return res, err
		}
		res.after, res.recovered = s, time.Since(start)
		res.peak = maxSample(res.peak, s)
		if s.within(res.base, 0.10) {
			res.recoveredOK = true
			break
		}
		if res.recovered >= o.recover || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	after, err := v.refusals(ctx)
	if err != nil {
		return res, err
	}
	res.refusals = make(map[string]uint64)
	for k, n := range after {
		if d := n - before[k]; d > 0 {
			res.refusals[k] = d
		}
	}
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	res.honestAfterFailure = v.honest(hctx)
	hcancel()
	return res, nil
}

// within says whether s is back within frac of base (and a little more,
// for a victim whose baseline is tiny: 5 goroutines, 256 KiB), allowing
// for the record the runtime keeps, for good, of every goroutine that
// ever ran at once beyond the baseline's peak.
func (s sample) within(base sample, frac float64) bool {
	records := float64(goroutineRecord * max(0, s.peakGoroutines-base.peakGoroutines))
	return float64(s.goroutines) <= float64(base.goroutines)*(1+frac)+5 &&
		float64(s.heapLive) <= float64(base.heapLive)*(1+frac)+256<<10+records
}

// goroutineRecord is what the runtime keeps of a goroutine once it has
// run: 494 bytes on Go 1.26 (5,000 goroutines that ended left 2.4 MB of
// live heap). A victim that served thousands of flows each with a
// goroutine, as Go servers do, cannot come back to within 10% of a
// baseline of a few MiB without this allowance.
const goroutineRecord = 512

func maxSample(a, b sample) sample {
	return sample{goroutines: max(a.goroutines, b.goroutines), heapLive: max(a.heapLive, b.heapLive), rss: max(a.rss, b.rss),
		peakGoroutines: max(a.peakGoroutines, b.peakGoroutines)}
}

// watchPeak samples v four times a second until ctx ends, without asking
// for collections (which would slow it down), and returns the largest
// values seen.
func watchPeak(ctx context.Context, v victim) sample {
	var peak sample
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return peak
		case <-tick.C:
		}
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if s, err := v.sample(sctx, false); err == nil {
			peak = maxSample(peak, s)
		}
		cancel()
	}
}

// runHonest runs honest rounds one after another for d (or until stop is
// closed).
func runHonest(ctx context.Context, v victim, d time.Duration, stop <-chan struct{}) roundStats {
	var h roundStats
	start := time.Now()
	deadline := start.Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-stop:
			return h
		default:
		}
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		err := v.honest(rctx)
		cancel()
		if stop != nil && isClosed(stop) {
			break // cut off by the attack's end: it counts for neither
		}
		h.elapsed = time.Since(start)
		if err != nil {
			h.failed++
			if h.firstErr == nil {
				h.firstErr = err
			}
			continue
		}
		h.ok++
		h.lat = append(h.lat, time.Since(t0))
	}
	return h
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// report prints the results as Markdown and says whether a hard target
// was missed: an honest operation failed, the heap passed its cap, or the
// victim did not come back.
func report(w io.Writer, targetName string, results []result, o *options) (failed bool) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "## bench/attack -target %s\n\n", targetName)
	fmt.Fprintf(w, "%s, %d CPUs, %s/%s, %s; each attack %v after %v calm%s.\n\n",
		host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().Format("2006-01-02 15:04"),
		o.duration, o.calm, pick(o.quick, " (-quick)", ""))
	fmt.Fprintln(w, "| attack | the attacker | honest rounds ok | honest rounds/s calm → during | honest p99 during | victim goroutines base → peak → after | live heap base → peak → after | RSS peak | back within 10% | refused (victim's counters) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	var notes []string
	for _, r := range results {
		ratio := 0.0
		if c := r.calm.perSecond(); c > 0 {
			ratio = r.during.perSecond() / c
		}
		need := pick(r.attack.handshakeFlood, 0.25, 0.50)
		var misses []string
		if r.during.failed > 0 || r.calm.failed > 0 {
			failed = true
			misses = append(misses, fmt.Sprintf("honest failures (first: %v)", firstErr(r.calm.firstErr, r.during.firstErr)))
		}
		if r.honestAfterFailure != nil {
			failed = true
			misses = append(misses, fmt.Sprintf("honest round after the attack failed: %v", r.honestAfterFailure))
		}
		if maxHeap := cmp.Or(r.attack.maxHeap, o.maxHeap); r.peak.heapLive >= maxHeap {
			failed = true
			misses = append(misses, fmt.Sprintf("live heap %s over %s", mib(r.peak.heapLive), mib(maxHeap)))
		}
		back := fmt.Sprintf("%.1f s", r.recovered.Seconds())
		switch {
		case !r.recoveredOK && r.attack.holds != "":
			back = "holds " + r.attack.holds
		case !r.recoveredOK:
			failed = true
			back = "no (" + back + ")"
			misses = append(misses, "not back within 10% of the baseline")
		case r.recovered > 10*time.Second:
			misses = append(misses, "back after more than 10 s")
		}
		if ratio < need {
			misses = append(misses, fmt.Sprintf("honest throughput %.0f%% of calm (target %.0f%%)", 100*ratio, 100*need))
		}
		if r.outcome.missed != "" {
			failed = true
			misses = append(misses, r.outcome.missed)
		}
		did := r.outcome.did
		if r.outcome.extra != "" {
			did += "; " + r.outcome.extra
		}
		fmt.Fprintf(w, "| %s | %s | %d/%d | %.0f → %.0f (%.0f%%) | %s | %d → %d → %d | %s → %s → %s | %s | %s | %s |\n",
			r.attack.name, did,
			r.during.ok, r.during.ok+r.during.failed,
			r.calm.perSecond(), r.during.perSecond(), 100*ratio, ms(r.during.p99()),
			r.base.goroutines, r.peak.goroutines, r.after.goroutines,
			mib(r.base.heapLive), mib(r.peak.heapLive), mib(r.after.heapLive), mib(r.peak.rss),
			back, refusals(r.refusals))
		if len(misses) > 0 {
			notes = append(notes, fmt.Sprintf("- **%s** missed: %s", r.attack.name, strings.Join(misses, "; ")))
		}
	}
	fmt.Fprintln(w)
	for _, r := range results {
		fmt.Fprintf(w, "- %s: %s\n", r.attack.name, r.attack.about)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	} else if len(results) > 0 {
		fmt.Fprintln(w, "\nEvery target met.")
	}
	return failed
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func refusals(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
