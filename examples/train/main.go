// Command train rides a high-speed train through roam: a client on the
// train keeps one flow to a service while the train crosses cells.
//
//	go run ./examples/train                 # 30 s of the hsr-300 trace
//	go run ./examples/train -duration 2m -json
//
// In one process it starts an embedded registry (registry.Listen),
// a provider Host that registers telemetry.train there, and a client Host
// on the train that dials telemetry.train by name. The flow between them
// crosses mobility/emu's UDP relay, driven in real time by a trace (the
// built-in hsr-300 profile unless -trace says otherwise): the trace sets
// the link's delay, jitter, loss and rate per cell, blacks it out in
// tunnels, and at each handover kills the train's address for the outage,
// after which the train's Host Rebinds to its address in the new cell.
//
// The service streams to the train as fast as the path takes it, and the
// train sends telemetry back (205 kbit/s; -up-kbps). Every byte is a
// function of its offset, so each receiver counts exactly the bytes lost,
// duplicated, reordered or corrupted. A status line on stderr shows the ride; a
// summary follows, and with -json one JSON object on the last line of
// stdout. The exit status is 1 if any byte went wrong or an application
// saw an error. Ctrl-C ends the ride early and still prints the summary
// (a second Ctrl-C quits at once).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/roamnet/roam/mobility/trace"
)

func main() {
	// 30 s: hsr-300's first two handovers (at 13.8 s and 26.7 s) and
	// their stalls, with the setup and the drain well under a minute.
	duration := flag.Duration("duration", 30*time.Second, "length of the ride; 0 rides the whole trace")
	traceArg := flag.String("trace", "hsr-300", "a built-in profile ("+fmt.Sprint(trace.Profiles())+") or a trace file")
	seed := flag.Uint64("seed", 1, "seed of the emulated links' loss and jitter")
	asJSON := flag.Bool("json", false, "print the summary as one JSON object on the last line of stdout")
	quiet := flag.Bool("quiet", false, "no status line")
	upKbps := flag.Float64("up-kbps", defaultUpRate/1000, "rate of the train's telemetry in kbit/s; 0 sends it as fast as the path takes it")
	verbose := flag.Bool("v", false, "log roam's and the emulator's diagnostics to stderr")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("train: ")

	tr, name, err := loadTrace(*traceArg)
	if err != nil {
		log.Fatal(err)
	}
	cfg := config{Trace: tr, TraceName: name, Duration: *duration, Seed: *seed, UpRate: int64(*upKbps * 1000)}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	line := newStatusLine(os.Stderr)
	if !*quiet {
		cfg.Status = line.show
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		signal.Reset(os.Interrupt, syscall.SIGTERM) // a second one kills the process
		line.say("interrupted: ending the ride and draining the flow (Ctrl-C again to quit at once)")
		cancel()
	}()

	if !*quiet {
		length := *duration
		if length <= 0 {
			length = tr.Duration()
		}
		line.say(fmt.Sprintf("riding %s for %v: a registry, the service %s behind the emulated path, the train dialing it by name",
			name, length, service))
	}
	s, err := run(ctx, cfg)
	line.end()
	if err != nil {
		log.Fatal(err)
	}
	s.print(os.Stdout)
	if *asJSON {
		b, _ := json.Marshal(s)
		fmt.Println(string(b))
	}
	if !s.ok() {
		os.Exit(1)
	}
}

// loadTrace reads a built-in profile by name, or else a trace file.
func loadTrace(arg string) (*trace.Trace, string, error) {
	if slices.Contains(trace.Profiles(), arg) {
		tr, err := trace.Profile(arg)
		return tr, arg, err
	}
	tr, err := trace.ParseFile(arg)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("-trace %q: neither a profile (%v) nor a file", arg, trace.Profiles())
	}
	return tr, arg, err
}

// statusLine prints the ride's status: rewritten in place on a terminal,
// one line each time elsewhere (a log file, CI).
type statusLine struct {
	w        io.Writer
	terminal bool

	mu   sync.Mutex
	open bool // a line rewritten in place is on screen without its newline
}

func newStatusLine(f *os.File) *statusLine {
	fi, err := f.Stat()
	return &statusLine{w: f, terminal: err == nil && fi.Mode()&os.ModeCharDevice != 0}
}

func (l *statusLine) show(st status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.terminal {
		fmt.Fprintf(l.w, "\r%s\x1b[K", formatStatus(st))
		l.open = true
		return
	}
	fmt.Fprintln(l.w, formatStatus(st))
}

// say prints a message on a line of its own.
func (l *statusLine) say(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.endLocked()
	fmt.Fprintln(l.w, msg)
}

// end finishes a line rewritten in place, so that what follows starts on
// a line of its own.
func (l *statusLine) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.endLocked()
}

func (l *statusLine) endLocked() {
	if l.open {
		fmt.Fprintln(l.w)
		l.open = false
	}
}

// formatStatus fits the status in about 80 columns, so that a terminal
// does not wrap the line it rewrites.
func formatStatus(st status) string {
	stall := "-"
	if st.Handovers > 0 {
		stall = fmt.Sprintf("%.0fms", ms(st.LastStall))
		if st.Stalling {
			stall += "…"
		}
	}
	s := fmt.Sprintf("%5.1fs  cell %d  handovers %d  last stall %-7s  %6s %5s Mbit/s  %s verified",
		st.Elapsed.Seconds(), st.Cell, st.Handovers, stall,
		fmt.Sprintf("↓%.2f", st.DownMbps), fmt.Sprintf("↑%.2f", st.UpMbps), sizeOf(st.Verified))
	if st.Outage != "" {
		s += " (" + st.Outage + ")"
	}
	return s
}
