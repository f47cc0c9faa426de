package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/sal"
)

// The registry's attacks: each runs against a registryVictim until its
// context ends, then lets go of what it holds, and says what it did.

// attackerAddr is the i-th loopback address the attacker sends from.
func attackerAddr(o *options, i int) string {
	return fmt.Sprintf("127.0.0.%d", 2+i%max(1, o.sources))
}

// refusedCounts counts the errors an attacker got, by limit.
type refusedCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *refusedCounts) add(err error) {
	key := "other"
	if le := (*resolve.LimitError)(nil); errors.As(err, &le) {
		key = string(le.Limit)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = make(map[string]int)
	}
	r.n[key]++
}

func (r *refusedCounts) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.n) == 0 {
		return "nothing refused"
	}
	var parts []string
	for k, n := range r.n {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	return "refused: " + strings.Join(parts, ", ")
}

func registryInitials(ctx context.Context, v victim, o *options) (outcome, error) {
	rv := v.(*registryVictim)
	to, err := net.ResolveUDPAddr("udp", rv.addr)
	if err != nil {
		return outcome{}, err
	}
	rate := pick(o.quick, 5000, 10000)
	var socks []*net.UDPConn
	for i := range 8 * max(1, o.sources) {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(attackerAddr(o, i))})
		if err != nil {
			return outcome{}, err
		}
		defer pc.Close()
		socks = append(socks, pc)
	}
	// 100 bursts a second; each socket sends its share, and a fresh
	// socket (a fresh port) every burst would not change what the
	// registry sees: every Initial carries a connection ID of its own.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 1200)
	sent := 0
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			took := time.Since(start).Seconds()
			return outcome{did: fmt.Sprintf("%d fake Initials, %.0f/s", sent, float64(sent)/took)}, nil
		case <-tick.C:
		}
		for i := range rate / 100 {
			if _, err := socks[i%len(socks)].WriteToUDP(fakeInitial(buf[:0]), to); err == nil {
				sent++
			}
		}
	}
}

func registryJunk(ctx context.Context, v victim, o *options) (outcome, error) {
	to, err := netip.ParseAddrPort(v.(*registryVictim).addr)
	if err != nil {
		return outcome{}, err
	}
	did, err := sendJunk(ctx, to)
	return outcome{did: did}, err
}

func registryConns(ctx context.Context, v victim, o *options) (outcome, error) {
	rv := v.(*registryVictim)
	to, err := net.ResolveUDPAddr("udp", rv.addr)
	if err != nil {
		return outcome{}, err
	}
	var transports []*quic.Transport
	for i := range max(1, o.sources) {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(attackerAddr(o, i))})
		if err != nil {
			return outcome{}, err
		}
		tr := &quic.Transport{Conn: pc}
		defer pc.Close()
		defer tr.Close()
		transports = append(transports, tr)
	}
	tlsConf := &tls.Config{NextProtos: []string{"roam-registry/1"}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	var dialed, live, peak atomic.Int64
	var refused refusedCounts
	var wg sync.WaitGroup
	var held sync.WaitGroup
	for w := range 16 {
		tr := transports[w%len(transports)]
		wg.Go(func() {
			for ctx.Err() == nil {
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				qc, err := tr.Dial(dctx, to, tlsConf, &quic.Config{KeepAlivePeriod: 2 * time.Second})
				cancel()
				if err != nil {
					if ctx.Err() == nil {
						refused.add(limitOf(err))
					}
					continue
				}
				dialed.Add(1)
				n := live.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				held.Go(func() {
					defer live.Add(-1)
					select {
					case <-qc.Context().Done():
						refused.add(limitOf(context.Cause(qc.Context())))
					case <-ctx.Done():
						qc.CloseWithError(0, "")
					}
				})
				// A connection the registry refuses is closed at once;
				// give it the time to say so before the next dial.
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	held.Wait()
	return outcome{did: fmt.Sprintf("%d connections made, at most %d alive at once; %s", dialed.Load(), peak.Load(), &refused)}, nil
}

// limitOf turns the registry's close of a raw QUIC connection into the
// LimitError a registry.Client would make of it.
func limitOf(err error) error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == 3 {
		limit := ae.ErrorMessage
		if _, rest, ok := strings.Cut(strings.TrimPrefix(limit, "limit "), " "); ok {
			limit = rest
		}
		return &resolve.LimitError{Limit: resolve.Limit(limit)}
	}
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote && te.ErrorCode == quic.ConnectionRefused {
		return &resolve.LimitError{Limit: resolve.LimitHandshakes}
	}
	return err
}

// sinks are UDP sockets that read everything and answer nothing: the
// addresses of registrations whose probes must time out.
type sinks struct {
	conns []*net.UDPConn
	wg    sync.WaitGroup
}

func openSinks(n int) (*sinks, error) {
	s := &sinks{}
	for range n {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 250)})
		if err != nil {
			s.close()
			return nil, err
		}
		s.conns = append(s.conns, pc)
		s.wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					return
				}
			}
		})
	}
	return s, nil
}

func (s *sinks) addr(i int) netip.AddrPort {
	return s.conns[i%len(s.conns)].LocalAddr().(*net.UDPAddr).AddrPort()
}

func (s *sinks) close() {
	for _, pc := range s.conns {
		pc.Close()
	}
	s.wg.Wait()
}

// flood registers up to n endpoints under fresh keys, at sink addresses,
// with workers clients at a time from the attacker's addresses, each
// client used until the registry refuses it more leases. It returns the
// clients that hold the leases, which the caller closes (withdrawing).
func flood(ctx context.Context, rv *registryVictim, o *options, n, workers int, name func(i int, fp resolve.Fingerprint) string,
	at func(i int) netip.AddrPort, refused *refusedCounts) (made int, clients []*registry.Client) {
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var c *registry.Client
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if c == nil {
					var err error
					if c, err = rv.client(attackerAddr(o, w)+":0", nil); err != nil {
						refused.add(err)
						return
					}
					mu.Lock()
					clients = append(clients, c)
					mu.Unlock()
				}
				_, key, _ := ed25519.GenerateKey(rand.Reader)
				fp, _ := resolve.FingerprintOf(key.Public())
				// Not cut short by the attack's end: a registration the
				// registry made but the attacker did not hear of would
				// stay until its lease ran out, after the attack.
				rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := c.RegisterSigned(rctx, name(i, fp), resolve.Endpoint{Addr: at(i)}, key)
				cancel()
				if err == nil {
					mu.Lock()
					made++
					mu.Unlock()
					continue
				}
				if ctx.Err() != nil {
					return
				}
				refused.add(err)
				var le *resolve.LimitError
				switch {
				case errors.As(err, &le) && le.Limit == resolve.LimitLeasesPerConn:
					c = nil // a new connection, for more
				case errors.As(err, &le) && le.Limit != resolve.LimitLeasesPerKey:
					// The address (or the registry) is full: waiting is all
					// that is left, and the registry says so again.
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		})
	}
	wg.Wait()
	return made, clients
}

// closeAll closes clients, which withdraws their leases, 8 at a time: a
// client whose withdrawal outlasts its 1 s timeout gives up the rest,
// which then stay until their leases run out (15 s), as those of an
// attacker that just leaves would.
func closeAll(clients []*registry.Client) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, 8)
	for _, c := range clients {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			c.Close()
		})
	}
	wg.Wait()
}

func selfCertifying(prefix string) func(int, resolve.Fingerprint) string {
	return func(i int, fp resolve.Fingerprint) string { return fmt.Sprintf("rk--%s.%s%d", fp, prefix, i) }
}

func registryLeases(ctx context.Context, v victim, o *options) (outcome, error) {
	rv := v.(*registryVictim)
	s, err := openSinks(16)
	if err != nil {
		return outcome{}, err
	}
	defer s.close()
	var refused refusedCounts
	n := pick(o.quick, 4000, 20000)
	made, clients := flood(ctx, rv, o, n, 8, selfCertifying("lease"), s.addr, &refused)
	<-ctx.Done() // hold them to the end
	closeAll(clients)
	return outcome{did: fmt.Sprintf("%d of %d leases made over %d connections; %s", made, n, len(clients), &refused)}, nil
}

func registryChurn(ctx context.Context, v victim, o *options) (outcome, error) {
	rv := v.(*registryVictim)
	var refused refusedCounts
	var made atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			c, err := rv.client(attackerAddr(o, w)+":0", nil)
			if err != nil {
				refused.add(err)
				return
			}
			defer c.Close()
			for i := 0; ctx.Err() == nil; i++ {
				_, key, _ := ed25519.GenerateKey(rand.Reader)
				reg, err := c.RegisterSigned(ctx, fmt.Sprintf("churn%d-%d.attack", w, i), resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.250:9")}, key)
				if err != nil {
					if ctx.Err() == nil {
						refused.add(err)
					}
					continue
				}
				reg.Close()
				made.Add(1)
			}
		})
	}
	wg.Wait()
	out := outcome{did: fmt.Sprintf("%d names registered and withdrawn; %s", made.Load(), &refused)}
	var d debugVars
	if err := rv.get(context.Background(), "/debug/vars", &d); err == nil {
		out.extra = fmt.Sprintf("%d names held for their keys, %d released early", d.Registry.HeldNames, d.Registry.Limits.NamesReleasedEarly)
	}
	return out, nil
}

func registryWatches(ctx context.Context, v victim, o *options) (outcome, error) {
	rv := v.(*registryVictim)
	n := pick(o.quick, 8192, 40960)
	var refused refusedCounts
	var made, next atomic.Int64
	var mu sync.Mutex
	var clients []*registry.Client
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			var c *registry.Client
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if c == nil {
					var err error
					if c, err = rv.client(attackerAddr(o, w)+":0", nil); err != nil {
						refused.add(err)
						return
					}
					mu.Lock()
					clients = append(clients, c)
					mu.Unlock()
				}
				_, err := c.Watch(ctx, fmt.Sprintf("w%d.attack", i))
				if err == nil {
					made.Add(1)
					continue
				}
				if ctx.Err() != nil {
					return
				}
				refused.add(err)
				var le *resolve.LimitError
				if errors.As(err, &le) && le.Limit == resolve.LimitWatchesPerConn {
					c = nil
				} else if errors.As(err, &le) {
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		})
	}
	wg.Wait()
	<-ctx.Done() // the clients leave when the attack ends
	closeAll(clients)
	return outcome{did: fmt.Sprintf("%d of %d watches opened over %d connections; %s", made.Load(), n, len(clients), &refused)}, nil
}

// envProvider makes this program a provider process: it serves the
// service it names through $ROAM_RESOLVER, prints its address, and runs
// until killed.
const envProvider = "ROAM_ATTACK_PROVIDER"

func init() {
	if service := os.Getenv(envProvider); service != "" {
		fmt.Fprintln(os.Stderr, "provider:", provide(service))
		os.Exit(1)
	}
}

// provide serves service until its listener fails, and returns why.
func provide(service string) error {
	h, err := sal.NewHost(sal.Config{ListenAddr: "127.0.0.1:0"}) // resolver from $ROAM_RESOLVER
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	l, err := h.Listen(ctx, service) // registered with the registry when it returns
	cancel()
	if err != nil {
		return err
	}
	fmt.Println("ready", h.LocalAddr())
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		c.Close()
	}
}

func registryDead(ctx context.Context, v victim, o *options) (outcome, error) {
	rv := v.(*registryVictim)
	s, err := openSinks(16)
	if err != nil {
		return outcome{}, err
	}
	defer s.close()
	var refused refusedCounts
	const dead = 3000
	made, clients := flood(ctx, rv, o, dead, 8, selfCertifying("dead"), s.addr, &refused)
	defer closeAll(clients)
	out := outcome{did: fmt.Sprintf("%d of %d dead registrations; %s", made, dead, &refused)}

	// The provider registers after the flood, in a process of its own.
	const service = "provider.attack"
	self, err := os.Executable()
	if err != nil {
		return out, err
	}
	provider := exec.Command(self)
	provider.Env = append(os.Environ(), envProvider+"="+service, resolve.EnvResolver+"="+rv.url)
	provider.Stderr = os.Stderr
	lines, exited, err := startProcess(provider, "ready ")
	if err != nil {
		return out, err
	}
	defer func() { provider.Process.Kill(); <-exited }()
	watcher, err := rv.client("127.0.0.1:0", nil)
	if err != nil {
		return out, err
	}
	defer watcher.Close()
	ch, err := watcher.Watch(ctx, service)
	if err != nil {
		return out, err
	}
	// Answered, and probed for a few seconds: the registry knows it as
	// one that answers.
	if err := waitSet(ctx, ch, func(eps []resolve.Endpoint) bool { return len(eps) == 1 && eps[0].Addr.String() == lines[0] }); err != nil {
		return out, fmt.Errorf("the provider never showed: %w", err)
	}
	select {
	case <-ctx.Done():
		return out, nil
	case <-time.After(3 * time.Second):
	}
	provider.Process.Kill() // SIGKILL: no withdrawal, its lease lives on
	killed := time.Now()
	if err := waitSet(ctx, ch, func(eps []resolve.Endpoint) bool { return len(eps) == 0 }); err != nil {
		out.missed = fmt.Sprintf("crashed provider still answered %.1f s after the kill", time.Since(killed).Seconds())
		return out, nil
	}
	took := time.Since(killed)
	out.extra = fmt.Sprintf("crashed provider out of answers %.1f s after SIGKILL", took.Seconds())
	if took > 5*time.Second {
		out.missed = out.extra + " (target 5 s)"
	}
	<-ctx.Done()
	return out, nil
}

// waitSet waits for a set that ok accepts.
func waitSet(ctx context.Context, ch <-chan []resolve.Endpoint, ok func([]resolve.Endpoint) bool) error {
	for {
		select {
		case eps, open := <-ch:
			if !open {
				return errors.New("watch ended")
			}
			if ok(eps) {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
