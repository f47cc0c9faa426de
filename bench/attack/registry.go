package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/sal"
)

// The registry target: `roam registry`, built from this module and run with
// its defaults (health probes on), attacked by one peer from 127.0.0.2
// (and on, with -sources) while the honest client works from 127.0.0.1.

// runRegistry runs the registry's attacks whose names match, and exits.
func runRegistry(match *regexp.Regexp, quick bool, calm, duration time.Duration) {
	runTarget("registry", &registryTarget{}, match, quick, calm, duration)
}

var (
	registryBin  = flag.String("registry-bin", "", "roam binary whose registry to attack (default: built from this module)")
	firstContact = flag.Bool("first-contact", false, "the honest client presents no address-validation token, as a process that never reached the registry before")
)

type registryTarget struct {
	once sync.Once
	bin  string
	err  error
}

func (t *registryTarget) attacks(o *options) []attack {
	return []attack{
		{name: "initials", handshakeFlood: true, run: registryInitials,
			about: "spoofable QUIC Initials (random connection IDs, undecryptable payload) at 10k/s (5k/s with -quick); the registry answers with stateless Retries once 32 handshakes are in progress"},
		{name: "junk", run: registryJunk,
			about: "random datagrams at 30k/s, half of them with a QUIC long header (host.go's sendJunk)"},
		{name: "conns", handshakeFlood: true, run: registryConns,
			about: "QUIC connections from one address, 16 dials at a time, each held while the registry lets it live"},
		{name: "leases", run: registryLeases,
			about: fmt.Sprintf("%d registrations under fresh keys at addresses that never answer, held, then withdrawn", pick(o.quick, 4000, 20000))},
		{name: "churn", run: registryChurn, holds: "the names, each bound to its key for a day (at most 16,384)",
			about: "register-and-withdraw under fresh keys and fresh plain names, as fast as 4 workers go"},
		{name: "watches", run: registryWatches,
			about: fmt.Sprintf("%d watches of distinct names, then the clients leave", pick(o.quick, 8192, 40960))},
		{name: "dead", run: registryDead, minDuration: 20 * time.Second,
			about: "3,000 registrations under fresh keys at addresses that never answer, then a real provider (a sal Host in a process of its own) registers, is answered, and is SIGKILLed"},
	}
}

func (t *registryTarget) build() (string, error) {
	t.once.Do(func() {
		if *registryBin != "" {
			t.bin = *registryBin
			return
		}
		dir, err := os.MkdirTemp("", "attack")
		if err != nil {
			t.err = err
			return
		}
		t.bin = filepath.Join(dir, "roam")
		out, err := exec.Command("go", "build", "-o", t.bin, "github.com/roamnet/roam/sal/cmd/roam").CombinedOutput()
		if err != nil {
			t.err = fmt.Errorf("go build roam: %w: %s", err, out)
		}
	})
	return t.bin, t.err
}

// registryVictim is one `roam registry` process and the honest client's
// provider.
type registryVictim struct {
	cmd    *exec.Cmd
	exited chan struct{}
	addr   string // host:port
	pin    resolve.Fingerprint
	url    string
	debug  string // http://host:port

	honestHost *sal.Host // answers the registry's probes for the honest services
	honestKey  ed25519.PrivateKey
	provider   *registry.Client // keeps honestService registered
}

func (t *registryTarget) start(ctx context.Context, o *options) (victim, error) {
	bin, err := t.build()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "registry", "-listen", "127.0.0.1:0", "-debug", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	lines, exited, err := startProcess(cmd, "roam registry: serving ", "roam registry: debug at ")
	if err != nil {
		return nil, err
	}
	v := &registryVictim{cmd: cmd, exited: exited, url: lines[0], debug: strings.TrimSuffix(lines[1], "/debug/vars")}
	o.logf("victim at %s, debug at %s", v.url, v.debug)
	u, err := url.Parse(v.url)
	if err == nil {
		v.addr = u.Host
		v.pin, err = resolve.ParseFingerprint(u.Query().Get("key"))
	}
	if err == nil {
		_, v.honestKey, err = ed25519.GenerateKey(rand.Reader)
	}
	if err == nil {
		v.honestHost, err = sal.NewHost(sal.Config{Resolver: resolve.NewMemory(), ListenAddr: "127.0.0.1:0", Key: v.honestKey})
	}
	for _, service := range []string{honestService, roundService} {
		if err == nil {
			_, err = v.honestHost.Listen(ctx, service)
		}
	}
	if err == nil {
		v.provider, err = v.client("127.0.0.1:0", v.honestKey)
	}
	if err == nil {
		_, err = v.provider.Register(ctx, honestService, resolve.Endpoint{Addr: v.honestHost.LocalAddr()})
	}
	if err != nil {
		v.close()
		return nil, err
	}
	// The registry's prober finds the provider within a second and keeps
	// a connection to it: part of the baseline.
	time.Sleep(2 * time.Second)
	return v, nil
}

// The honest client's services: one a provider keeps registered all along,
// one that each round registers and withdraws.
const (
	honestService = "honest.attack"
	roundService  = "round.attack"
)

// startProcess starts cmd and returns the stdout lines that begin with
// prefixes, in order, with the prefixes cut off.
func startProcess(cmd *exec.Cmd, prefixes ...string) ([]string, chan struct{}, error) {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan struct{})
	found := make(chan []string, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		var got []string
		for sc.Scan() {
			if len(got) < len(prefixes) {
				if s, ok := strings.CutPrefix(sc.Text(), prefixes[len(got)]); ok {
					if got = append(got, s); len(got) == len(prefixes) {
						found <- got
					}
				}
			}
		}
		io.Copy(io.Discard, stdout)
		cmd.Wait()
	}()
	select {
	case lines := <-found:
		return lines, exited, nil
	case <-exited:
		return nil, nil, fmt.Errorf("%s exited before printing %q", cmd.Path, prefixes)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		return nil, nil, fmt.Errorf("%s printed no %q within 30 s", cmd.Path, prefixes)
	}
}

func (v *registryVictim) close() error {
	if v.provider != nil {
		v.provider.Close()
	}
	if v.honestHost != nil {
		v.honestHost.Close()
	}
	v.cmd.Process.Kill()
	<-v.exited
	return nil
}

// client opens a registry client from local ("127.0.0.2:0"; "" for any).
func (v *registryVictim) client(local string, signer ed25519.PrivateKey) (*registry.Client, error) {
	cfg := registry.ClientConfig{Key: v.pin, LocalAddr: local}
	if signer != nil {
		cfg.Signer = signer
	}
	return registry.NewClient(v.addr, cfg)
}

// honest registers, looks up and watches, on a fresh connection from
// 127.0.0.1, as a provider that starts would, then withdraws. Like every
// registry.Client in a process, it presents the address-validation token
// of an earlier connection, if it has one, unless -first-contact.
func (v *registryVictim) honest(ctx context.Context) error {
	cfg := registry.ClientConfig{Key: v.pin, Signer: v.honestKey, LocalAddr: "127.0.0.1:0"}
	if *firstContact {
		cfg.QUIC = &quic.Config{MaxIdleTimeout: 6 * time.Second, KeepAlivePeriod: 2 * time.Second, TokenStore: noTokens{}}
	}
	c, err := registry.NewClient(v.addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	reg, err := c.Register(ctx, roundService, resolve.Endpoint{Addr: v.honestHost.LocalAddr()})
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	defer reg.Close()
	want := func(eps []resolve.Endpoint) bool { return len(eps) == 1 && eps[0].Addr == v.honestHost.LocalAddr() }
	eps, err := c.Resolve(ctx, roundService)
	if err != nil {
		return fmt.Errorf("resolve: %w", err)
	}
	if !want(eps) {
		return fmt.Errorf("resolve answered %v", eps)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	ch, err := c.Watch(wctx, honestService)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	select {
	case eps := <-ch:
		if !want(eps) {
			return fmt.Errorf("watch started with %v", eps)
		}
	case <-ctx.Done():
		return fmt.Errorf("watch: no first set: %w", ctx.Err())
	}
	return nil
}

// noTokens is a quic.TokenStore that keeps nothing.
type noTokens struct{}

func (noTokens) Put(string, *quic.ClientToken) {}
func (noTokens) Pop(string) *quic.ClientToken  { return nil }

// debugVars is what `roam registry -debug` serves.
type debugVars struct {
	Registry registry.Stats `json:"registry"`
	Process  struct {
		Goroutines int    `json:"goroutines"`
		HeapLive   uint64 `json:"heap_live_bytes"`
		RSS        uint64 `json:"rss_bytes"`
	} `json:"process"`
}

func (v *registryVictim) get(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.debug+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

func (v *registryVictim) sample(ctx context.Context, collect bool) (sample, error) {
	var d debugVars
	var err error
	if collect {
		err = v.get(ctx, "/debug/gc", &d.Process)
	} else {
		err = v.get(ctx, "/debug/vars", &d)
	}
	return sample{goroutines: d.Process.Goroutines, heapLive: d.Process.HeapLive, rss: d.Process.RSS}, err
}

func (v *registryVictim) refusals(ctx context.Context) (map[string]uint64, error) {
	var d debugVars
	if err := v.get(ctx, "/debug/vars", &d); err != nil {
		return nil, err
	}
	l := d.Registry.Limits
	return map[string]uint64{
		"handshakes": l.HandshakesRefused, "retries": l.Retries,
		"conns": l.ConnsRefused, "conns/addr": l.ConnsRefusedAddr,
		"leases": l.LeasesRefused, "leases/key": l.LeasesRefusedKey, "leases/conn": l.LeasesRefusedConn,
		"endpoints": l.EndpointsRefused,
		"watches":   l.WatchesRefused, "watches/conn": l.WatchesRefusedConn,
		"names released early": l.NamesReleasedEarly,
	}, nil
}
