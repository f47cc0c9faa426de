package main

// roam registry serves roam's embedded registry: the zero-setup resolver
// that maps service IDs to endpoints for Hosts that register and look
// services up over QUIC.
//
//	go run ./sal/cmd/roam registry -listen 127.0.0.1:7700
//
// It prints the registry:// URL, with the registry's key pinned, that Hosts
// use as ROAM_RESOLVER. With -key the registry keeps its identity across
// restarts, so clients keep their pin and notice a restart at once; it is
// rebuilt from its providers' renewals within one lease. It probes every
// registered endpoint with a SAL ping (disable with -probe=false), and
// stops handing out one that fails three probes in a row: a provider that
// crashes is out of answers within about 4 s. A service whose providers
// are all down then resolves to none (resolve.ErrAllDown); with
// -answer-all-down it resolves to all of them instead.
//
// It bounds what clients may make it hold (the -max-* flags; 0 keeps the
// registry package's default, see registry.Config), and refuses the
// excess with a typed error the client reads (resolve.LimitError). With
// -debug it serves, over HTTP, expvar's /debug/vars: "registry" holds
// registry.Stats, with a counter per kind of refusal, and
// "process" the goroutines, the live heap (as of the last collection) and
// the resident memory; /debug/gc collects first and answers "process" as
// it then is, for measurements such as bench/attack's.

import (
	"context"
	"encoding/json"
	"expvar"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/sal"
)

func runRegistry(c *cli, ctx context.Context, args []string) error {
	set := c.flags("registry", "", "serve the embedded registry")
	listen := set.String("listen", "127.0.0.1:7700", "UDP `address` to serve on")
	keyFile := set.String("key", "", "PEM `file` holding the registry's Ed25519 key; made if missing (default: a new key each start)")
	lease := set.Duration("lease", 15*time.Second, "how long a registration lives without renewal")
	probe := set.Bool("probe", true, "probe registered endpoints with SAL pings and leave out those that fail")
	interval := set.Duration("probe-interval", time.Second, "time between probes of one endpoint")
	answerAllDown := set.Bool("answer-all-down", false, "answer every endpoint of a service whose endpoints all fail their probes, rather than none")
	debug := set.String("debug", "", "serve expvar counters over HTTP at this `address` (e.g. 127.0.0.1:7701)")
	verbose := set.Bool("v", false, "log registrations, refusals and health changes")
	var cfg registry.Config
	for _, l := range []struct {
		v         *int
		name, use string
	}{
		{&cfg.MaxConns, "max-conns", "client connections in all"},
		{&cfg.MaxConnsPerAddr, "max-conns-per-addr", "client connections from one IP address (IPv6: /64)"},
		{&cfg.MaxHandshakes, "max-handshakes", "QUIC handshakes in progress"},
		{&cfg.RetryThreshold, "retry-threshold", "handshakes in progress past which a client must prove its address with a Retry (negative: always)"},
		{&cfg.MaxLeases, "max-leases", "registrations in all"},
		{&cfg.MaxLeasesPerKey, "max-leases-per-key", "registrations whose endpoints pin one key"},
		{&cfg.MaxLeasesPerConn, "max-leases-per-conn", "registrations made over one connection"},
		{&cfg.MaxWatches, "max-watches", "watches in all"},
		{&cfg.MaxWatchesPerConn, "max-watches-per-conn", "watches on one connection"},
	} {
		set.IntVar(l.v, l.name, 0, "at most this many "+l.use+" (0: the default)")
	}
	if err := c.parse(set, args, 0); err != nil {
		return err
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))

	cfg.LeaseTTL, cfg.Logger = *lease, log
	if *keyFile != "" {
		key, err := sal.LoadKey(*keyFile)
		if err != nil {
			return err
		}
		cfg.Key = key
	}
	if *probe {
		// The prober is a Host of its own: it serves nothing and resolves
		// nothing, it only pings the endpoints the registry hands out.
		prober, err := sal.NewHost(sal.Config{Resolver: resolve.NewStatic(nil), Logger: log})
		if err != nil {
			return err
		}
		defer prober.Close()
		cfg.Prober = prober
		cfg.Health = resolve.HealthConfig{Interval: *interval, AnswerWhenAllDown: *answerAllDown, Logger: log}
	}
	reg, err := registry.Listen(*listen, cfg)
	if err != nil {
		return err
	}
	defer reg.Close()
	fmt.Fprintln(c.stdout, "roam registry: serving", reg.URL())
	fmt.Fprintf(c.stdout, "roam registry: export %s='%s'\n", resolve.EnvResolver, reg.URL())

	if *debug != "" {
		expvar.Publish("registry", expvar.Func(func() any { return reg.Stats() }))
		expvar.Publish("process", expvar.Func(func() any { return readProcess() }))
		mux := http.NewServeMux()
		mux.Handle("/debug/vars", expvar.Handler())
		mux.HandleFunc("/debug/gc", func(w http.ResponseWriter, _ *http.Request) {
			runtime.GC()
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(readProcess())
		})
		ln, err := net.Listen("tcp", *debug)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, "roam registry: debug at http://"+ln.Addr().String()+"/debug/vars")
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}

	<-ctx.Done()
	return nil
}

// process is what -debug reports of the process itself.
type process struct {
	Goroutines int    `json:"goroutines"`
	HeapLive   uint64 `json:"heap_live_bytes"` // as of the last collection
	HeapAlloc  uint64 `json:"heap_alloc_bytes"`
	RSS        uint64 `json:"rss_bytes"` // 0 where /proc is missing
	GCs        uint64 `json:"gcs"`
}

func readProcess() process {
	samples := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/gc/heap/frees:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	metrics.Read(samples)
	p := process{Goroutines: runtime.NumGoroutine()}
	for i, s := range samples {
		if s.Value.Kind() != metrics.KindUint64 {
			continue
		}
		switch v := s.Value.Uint64(); i {
		case 0:
			p.HeapLive = v
		case 1:
			p.HeapAlloc = v
		case 2:
			p.HeapAlloc -= v
		case 3:
			p.GCs = v
		}
	}
	// statm's second field is the resident set, in pages.
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		var size, resident uint64
		if _, err := fmt.Sscan(string(b), &size, &resident); err == nil {
			p.RSS = resident * uint64(os.Getpagesize())
		}
	}
	return p
}
