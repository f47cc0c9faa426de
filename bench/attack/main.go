// Command attack runs hostile clients against one of roam's listening
// parts on loopback, each attack beside an honest client, and reports
// whether the honest client's operations kept succeeding and how fast,
// the victim's goroutines and heap before, during and after, and how long
// it took to come back:
//
//	go run ./bench/attack -target registry [-attacks a,b] [-duration 10s] [-quick]
//
// Each attack gets a fresh victim in a process of its own, so that its
// memory is its own: a calm phase measures the honest client alone and the
// victim's baseline, the attack runs for -duration beside the honest
// client, and the victim is then watched (collecting garbage before each
// look) until its goroutines and live heap are back within 10% of the
// baseline, for at most -recover.
//
// A target lives in a file of its own (registry.go): it starts victims,
// runs one honest round, and lists its attacks. Adding one (a sal Host)
// means a new file and a line in targets below.
//
// It prints a Markdown table, and exits with status 1 when an honest
// operation failed, a victim's live heap passed -max-heap, or a victim did
// not come back within -recover, so that CI can run -quick.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"
)

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
	run   func(ctx context.Context, v victim, o *options) (outcome, error)
}

// outcome is what an attack reports of itself.
type outcome struct {
	did   string // what the attacker managed, and what it was refused
	extra string // an attack's own measurement, such as a time to notice
	// missed, when set, is a target of the attack's own that it missed.
	missed string
}

var targets = map[string]target{
	"registry": &registryTarget{},
}

func main() {
	var o options
	targetName := flag.String("target", "registry", "what to attack: "+strings.Join(targetNames(), ", "))
	only := flag.String("attacks", "", "comma-separated attacks to run (default all)")
	flag.BoolVar(&o.quick, "quick", false, "short attacks with smaller floods, for CI (about a minute)")
	flag.DurationVar(&o.duration, "duration", 0, "how long each attack runs (default 10s, 3s with -quick)")
	flag.DurationVar(&o.calm, "calm", 0, "the calm phase before each attack (default 3s, 1s with -quick)")
	flag.DurationVar(&o.recover, "recover", 20*time.Second, "the longest wait for a victim to come back after an attack")
	maxHeap := flag.Uint64("max-heap", 256, "MiB of live heap a victim must stay under")
	flag.IntVar(&o.sources, "sources", 1, "loopback addresses (127.0.0.2 on) each attack sends from")
	flag.BoolVar(&o.verbose, "v", false, "say what each phase does")
	flag.Parse()
	o.maxHeap = *maxHeap << 20
	if o.duration == 0 {
		o.duration = pick(o.quick, 3*time.Second, 10*time.Second)
	}
	if o.calm == 0 {
		o.calm = pick(o.quick, time.Second, 3*time.Second)
	}
	tgt, ok := targets[*targetName]
	if !ok {
		fatal(fmt.Errorf("unknown target %q (have %s)", *targetName, strings.Join(targetNames(), ", ")))
	}
	attacks := tgt.attacks(&o)
	if *only != "" {
		var keep []attack
		for name := range strings.SplitSeq(*only, ",") {
			i := slices.IndexFunc(attacks, func(a attack) bool { return a.name == name })
			if i < 0 {
				fatal(fmt.Errorf("unknown attack %q", name))
			}
			keep = append(keep, attacks[i])
		}
		attacks = keep
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var results []result
	for _, a := range attacks {
		res, err := runAttack(ctx, tgt, a, &o)
		if err != nil {
			fatal(fmt.Errorf("%s: %w", a.name, err))
		}
		results = append(results, res)
		if ctx.Err() != nil {
			break
		}
	}
	failed := report(os.Stdout, *targetName, results, &o)
	if failed {
		os.Exit(1)
	}
}

func targetNames() []string {
	var names []string
	for name := range targets {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func pick[T any](quick bool, short, long T) T {
	if quick {
		return short
	}
	return long
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "attack:", err)
	os.Exit(2)
}

func (o *options) logf(format string, args ...any) {
	if o.verbose {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}
