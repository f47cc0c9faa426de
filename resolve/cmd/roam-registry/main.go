// Command roam-registry serves roam's embedded registry: the zero-setup
// resolver that maps service IDs to endpoints for Hosts that register and
// look services up over QUIC.
//
//	go run ./resolve/cmd/roam-registry -listen 127.0.0.1:7700
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
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"expvar"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "roam-registry:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:7700", "UDP `address` to serve on")
	keyFile := flag.String("key", "", "PEM `file` holding the registry's Ed25519 key; made if missing (default: a new key each start)")
	lease := flag.Duration("lease", 15*time.Second, "how long a registration lives without renewal")
	probe := flag.Bool("probe", true, "probe registered endpoints with SAL pings and leave out those that fail")
	interval := flag.Duration("probe-interval", time.Second, "time between probes of one endpoint")
	answerAllDown := flag.Bool("answer-all-down", false, "answer every endpoint of a service whose endpoints all fail their probes, rather than none")
	debug := flag.String("debug", "", "serve expvar counters over HTTP at this `address` (e.g. 127.0.0.1:7701)")
	verbose := flag.Bool("v", false, "log registrations, refusals and health changes")
	flag.Parse()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg := resolve.RegistryConfig{LeaseTTL: *lease, Logger: log}
	if *keyFile != "" {
		key, err := loadOrMakeKey(*keyFile)
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
	reg, err := resolve.ListenRegistry(*listen, cfg)
	if err != nil {
		return err
	}
	defer reg.Close()
	fmt.Println("roam-registry: serving", reg.URL())
	fmt.Printf("roam-registry: export %s='%s'\n", resolve.EnvResolver, reg.URL())

	if *debug != "" {
		expvar.Publish("registry", expvar.Func(func() any { return reg.Stats() }))
		ln, err := net.Listen("tcp", *debug)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: expvar.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}

// loadOrMakeKey reads an Ed25519 key in PKCS #8 PEM, or makes one and
// writes it (mode 0600) when the file does not exist.
func loadOrMakeKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := os.WriteFile(path, out, 0o600); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: %T is not an Ed25519 key", path, k)
	}
	return key, nil
}
