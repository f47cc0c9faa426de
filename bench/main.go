// Command bench runs every scenario with every system on the same
// emulated links and traces, in one run, and reports how each fared:
//
//	go run ./bench [-quick] [-out DIR] [-scenarios a,b] [-systems a,b] [-seed N]
//
// The systems are roam; TCP with the reconnect-and-resume loop an
// application writes by hand; raw quic-go without migration, resumed the
// same way; quic-go with hand-driven migration (AddPath, Probe, Switch);
// and MPTCP where the machine has it. The scenarios are a calm wired link,
// the hsr-300 trace, two carriers at once (hsr-dual: the hsr-300-dual
// profile on two paths, where roam-dual and mptcp-dual use both and the
// others the first), the reference trace of ../shared/traces, a server
// that moves, a 30 s tunnel, 50 NAT rebindings in 3 s, and 1,000 flows
// through one handover (scenario.go).
//
// The UDP systems run over mobility/emu's relay on loopback (roam in
// hsr-dual over its in-memory MultiPath), TCP and MPTCP in the kernel
// through TUN devices and the same link model (kernelnet.go), or over a
// userspace TCP path with the same delay, rate and outages (tcppath.go).
// Every byte is checked by the receiving application against a pattern
// derived from its offset (pattern.go). Lanes of the long scenarios run
// side by side; the calm and many-flow ones in turns, so that each
// system's CPU time and memory can be measured.
//
// It prints a Markdown table, and writes it (results.md) with the raw
// data (results.json, results.csv, stalls.csv) and PNG plots under -out.
// It exits with status 1 when roam loses, duplicates or corrupts a byte
// or shows the application an error, so that CI catches it.
//
// The package's tests hold the `go test -bench` benchmarks, which share
// its paths and workloads.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

func main() {
	quick := flag.Bool("quick", false, "a smoke run of about 2 minutes: short traces, fewer flows, one run")
	out := flag.String("out", "bench-results", "directory for results.md, the raw data and the plots")
	only := flag.String("scenarios", "", "comma-separated scenarios to run (default all)")
	systemsFlag := flag.String("systems", "", "comma-separated systems to run (default all)")
	seed := flag.Uint64("seed", 1, "seed of the emulated links' randomness")
	runs := flag.Int("runs", 0, "runs of the calm scenario (default 1 with -quick, else 3)")
	traceLength := flag.Duration("duration", 0, "cut the trace scenarios (hsr-300, reference) to this length")
	reference := flag.String("reference", filepath.Join("..", "shared", "traces", "reference.trace"),
		"the reference trace, run as given")
	flag.StringVar(&kernelCC, "tcp-cc", kernelCC, "congestion control of the kernel's TCP and MPTCP (cubic matches quic-go's)")
	flag.Parse()

	scs, err := scenarios(scenarioOpts{quick: *quick, reference: *reference, runs: *runs, traceLength: *traceLength})
	if err != nil {
		fatal(err)
	}
	if scs, err = filter(scs, *only, func(s *scenario) string { return s.name }); err != nil {
		fatal(err)
	}
	systems, err := filter(allSystems(), *systemsFlag, func(s system) string { return s.name })
	if err != nil {
		fatal(err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	rn := &runner{systems: systems, seed: *seed, progress: os.Stderr, began: time.Now()}
	rn.logf("%d scenarios, systems %s, results in %s", len(scs), names(systems), *out)
	var results []laneResult
	for _, sc := range scs {
		rn.logf("%s: %s", sc.name, sc.title)
		results = append(results, rn.run(ctx, sc)...)
		if ctx.Err() != nil {
			break
		}
	}
	rows := rowsOf(results)
	targets := checkTargets(rows)
	var md strings.Builder
	writeReport(&md, scs, systems, rows, targets, *quick, *seed, time.Since(rn.began))
	fmt.Print(md.String())
	if err := os.WriteFile(filepath.Join(*out, "results.md"), []byte(md.String()), 0o644); err != nil {
		fatal(err)
	}
	if err := writeRaw(*out, results); err != nil {
		fatal(err)
	}
	files, err := writePlots(*out, scs, rows)
	if err != nil {
		fatal(err)
	}
	rn.logf("wrote results.md, results.json, results.csv, stalls.csv and %d plots to %s", len(files), *out)
	if !targets[0].met {
		fmt.Fprintln(os.Stderr, "bench: roam missed its correctness target:", targets[0].detail)
		os.Exit(1)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(2)
}

// filter keeps the items named in list (comma-separated; all if empty).
func filter[T any](items []T, list string, name func(T) string) ([]T, error) {
	if list == "" {
		return items, nil
	}
	var out []T
	for _, want := range strings.Split(list, ",") {
		i := slices.IndexFunc(items, func(t T) bool { return name(t) == strings.TrimSpace(want) })
		if i < 0 {
			var all []string
			for _, t := range items {
				all = append(all, name(t))
			}
			return nil, fmt.Errorf("unknown %q (have %s)", want, strings.Join(all, ", "))
		}
		out = append(out, items[i])
	}
	return out, nil
}

func names(systems []system) string {
	var s []string
	for _, sys := range systems {
		s = append(s, sys.name)
	}
	return strings.Join(s, ", ")
}

// writeReport writes results.md: what ran, the table, the targets, and
// how to read them.
func writeReport(w io.Writer, scs []*scenario, systems []system, rows []*row, targets []target, quick bool, seed uint64, took time.Duration) {
	mode := "full run"
	if quick {
		mode = "quick run (-quick): short traces, fewer flows; not for quoting"
	}
	fmt.Fprintf(w, "# roam benchmark results\n\n%s, %s, %s/%s, %d CPUs, seed %d, took %v.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), seed, took.Round(time.Second))
	fmt.Fprintf(w, "Mode: %s.\n\n## Scenarios\n\n", mode)
	for _, sc := range scs {
		fmt.Fprintf(w, "- **%s**: %s\n", sc.name, sc.title)
	}
	fmt.Fprintf(w, "\n## Systems\n\n")
	for _, s := range systems {
		fmt.Fprintf(w, "- **%s**: %s\n", s.name, s.title)
	}
	fmt.Fprintf(w, "\n## Results\n\n")
	writeTable(w, scs, rows)
	writeDualTable(w, scs, rows)
	fmt.Fprintf(w, "\n## Targets\n\n| target | result | figures |\n|---|---|---|\n")
	for _, t := range targets {
		fmt.Fprintf(w, "| %s | %s | %s |\n", t.name, t.mark(), t.detail)
	}
	fmt.Fprint(w, legend)
}

const legend = `
## How to read this

- **goodput**: bytes the receiving application read and verified, over the
  run; for a fixed transfer (nat-rebind), its size over the time it took.
  A twin such as "(still)" or "(calm)" is the same link without the
  disruptions, run beside the scenario at the same time.
- **stall**: per disruption (handover, server move, burst of rebindings;
  a tunnel only in the tunnel scenario) and flow, the longest time the
  receiver read nothing around it. It includes the path's own outage,
  which no system can avoid; **beyond outage** is what is left after it,
  in RTTs of the link after the disruption.
- **lost / dup**: bytes the receiver found missing or repeated, from the
  offsets the pattern carries; "misplaced" bytes fit nowhere.
- **app errors**: errors a Read, Write or dial returned to the
  application. For the baselines every broken connection is one (their
  loop then reconnects); roam hides its resumes, counted apart.
- **reconnects**: connections the application opened again.
- **CPU** and **mem/flow**: measured only where a system ran alone (calm,
  flows), from the start of the transfer (connections open) to its end;
  both ends and the emulated path are in this one process. mem/flow is the
  Go heap of both ends per open flow: the kernel's socket buffers of TCP
  and MPTCP are not in it.
- The UDP systems run through mobility/emu's relay on loopback. TCP and
  MPTCP run in the Linux kernel, in two network namespaces joined by TUN
  devices whose packets this program carries through the same link model
  (delay, jitter, loss, rate and queue, blackouts), a NAT and dead
  addresses: the kernel's netem is not needed. Without root, TCP runs
  through a userspace proxy that cannot lose a byte (TCP at its best),
  and MPTCP says why it cannot run. The kernel's TCP uses Cubic (-tcp-cc),
  as quic-go does: with BBR, which ignores random loss, TCP outruns every
  loss-based sender on the lossy traces for reasons that have nothing to
  do with mobility.
- At a handover every client learns its new address when the outage
  ends, as from its OS: roam Rebinds (QUIC migration, resume as
  fallback); quic-migrate probes and switches each connection by hand,
  reconnecting if the probe takes over 1 s; TCP and quic reconnect; MPTCP
  adds the new address as a subflow endpoint. A NAT rebinding tells no
  one.
- **hsr-dual** plays the two traces of hsr-300-dual, a carrier each, on
  two paths from two client addresses to the server's one address. The
  dual systems use both: roam-dual (a client Host with Config.Paths; each
  flow on one path at a time), roam-agg (the same with PathAggregate: each
  flow on both at once), both over mobility/emu's MultiPath in memory,
  where a carrier's
  handover is its path's outage and a new mapping at its NAT, and
  nothing tells the Host; mptcp-dual in the kernel with a subflow
  endpoint per path, whose handover moves that path's address (the new
  one is announced as an endpoint when the outage ends). The other
  systems run on the first path alone (roam there over the same
  MultiPath as roam-dual, the rest as in hsr-300). Its own table counts
  the handovers of one carrier only, not the tunnels, which cut both,
  nor a handover within 2 s of a tunnel's end: the stall in ms and in
  RTTs of the path that survives (no outage need be waited out with a
  second path), and **sent / delivered**, the bytes the client offered
  its paths toward the server (headers and retransmissions included, by
  the emulated paths' own counters) over those the application received:
  the price of redundancy. A single-path system's stall at the other
  carrier's handover is its usual loss recovery.
`
