package resolve_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// probeMode is how the fake prober answers for one endpoint.
type probeMode uint8

const (
	probeOK   probeMode = iota
	probeFail           // fails at once, as a refusal would
	probeHang           // answers nothing until the probe's context ends, as a crashed Host
)

var errProbe = errors.New("test: probe failed")

// fakeProber answers probes per endpoint address and counts them.
type fakeProber struct {
	mu       sync.Mutex
	mode     map[netip.AddrPort]probeMode
	calls    map[netip.AddrPort]int
	inFlight int
	peak     int
}

func newFakeProber() *fakeProber {
	return &fakeProber{mode: map[netip.AddrPort]probeMode{}, calls: map[netip.AddrPort]int{}}
}

func (p *fakeProber) set(addr netip.AddrPort, m probeMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode[addr] = m
}

func (p *fakeProber) count(addr netip.AddrPort) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[addr]
}

func (p *fakeProber) Probe(ctx context.Context, service string, ep resolve.Endpoint) error {
	p.mu.Lock()
	p.calls[ep.Addr]++
	m := p.mode[ep.Addr]
	p.inFlight++
	p.peak = max(p.peak, p.inFlight)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inFlight--
		p.mu.Unlock()
	}()
	switch m {
	case probeFail:
		return errProbe
	case probeHang:
		<-ctx.Done()
		return context.Cause(ctx)
	}
	time.Sleep(time.Millisecond) // a round trip, so RTTs are not zero
	return nil
}

var (
	epA = resolve.Endpoint{Addr: netip.MustParseAddrPort("10.0.0.1:4000")}
	epB = resolve.Endpoint{Addr: netip.MustParseAddrPort("10.0.0.2:4000")}
	epC = resolve.Endpoint{Addr: netip.MustParseAddrPort("10.0.0.3:4000")}
)

// registerAll registers eps for service in mem until the test ends.
func registerAll(t *testing.T, mem *resolve.Memory, service string, eps ...resolve.Endpoint) {
	t.Helper()
	for _, ep := range eps {
		reg, err := mem.Register(context.Background(), service, ep)
		require.NoError(t, err)
		t.Cleanup(func() { reg.Close() })
	}
}

// next waits for the watch's next set, at most limit, and returns it with
// the time it took.
func next(t *testing.T, ch <-chan []resolve.Endpoint, limit time.Duration) ([]resolve.Endpoint, time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case eps, ok := <-ch: // a set already there beats a zero limit
		require.True(t, ok, "watch ended")
		return eps, 0
	default:
	}
	select {
	case eps, ok := <-ch:
		require.True(t, ok, "watch ended")
		return eps, time.Since(start)
	case <-time.After(limit):
		t.Fatalf("no change within %v", limit)
		return nil, 0
	}
}

// A provider that stops answering (crashed: its probes hang) is out of
// answers and watches within Interval*Failures+Timeout, and back after one
// good probe.
func TestHealthDropsAndRestoresEndpoint(t *testing.T) {
	for _, mode := range []probeMode{probeHang, probeFail} {
		synctest.Test(t, func(t *testing.T) {
			mem := resolve.NewMemory()
			registerAll(t, mem, "svc.demo", epA, epB)
			p := newFakeProber()
			h := resolve.NewHealth(mem, p, resolve.HealthConfig{})
			defer h.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			eps, err := h.Resolve(ctx, "svc.demo")
			require.NoError(t, err)
			require.Equal(t, []resolve.Endpoint{epA, epB}, eps)
			ch, err := h.Watch(ctx, "svc.demo")
			require.NoError(t, err)
			first, _ := next(t, ch, 0)
			require.Equal(t, []resolve.Endpoint{epA, epB}, first)

			time.Sleep(5 * time.Second) // in steady state, nothing changes
			synctest.Wait()
			select {
			case eps := <-ch:
				t.Fatalf("healthy endpoints changed: %v", eps)
			default:
			}
			require.Greater(t, p.count(epA.Addr), 3)

			p.set(epA.Addr, mode)
			const bound = 1*time.Second*3 + 1*time.Second // Interval*Failures + Timeout
			eps, took := next(t, ch, bound+time.Millisecond)
			require.Equal(t, []resolve.Endpoint{epB}, eps)
			require.LessOrEqual(t, took, bound)
			got, err := h.Resolve(ctx, "svc.demo")
			require.NoError(t, err)
			require.Equal(t, []resolve.Endpoint{epB}, got)
			st := h.Status("svc.demo")
			require.Len(t, st, 2)
			require.Equal(t, epA, st[0].Endpoint)
			require.False(t, st[0].Up)
			require.GreaterOrEqual(t, st[0].Failures, 3)
			require.Error(t, st[0].Err)
			require.True(t, st[1].Up)
			require.Positive(t, st[1].RTT)
			require.NoError(t, st[1].Err)

			p.set(epA.Addr, probeOK)
			eps, took = next(t, ch, 2*time.Second)
			require.Equal(t, []resolve.Endpoint{epA, epB}, eps)
			require.LessOrEqual(t, took, time.Second+time.Millisecond, "one good probe restores it")
			st = h.Status("svc.demo")
			require.True(t, st[0].Up)
			require.Zero(t, st[0].Failures)
		})
	}
}

// When every endpoint is down, the service resolves to none, with an
// error that says so (ErrAllDown, which also matches ErrNotFound), and its
// watches see an empty set; one good probe brings an endpoint back.
func TestHealthAllDownAnswersNone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := resolve.NewMemory()
		registerAll(t, mem, "svc.demo", epA, epB)
		p := newFakeProber()
		cfg := resolve.HealthConfig{Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Failures: 2}
		h := resolve.NewHealth(mem, p, cfg)
		defer h.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := h.Watch(ctx, "svc.demo")
		require.NoError(t, err)
		first, _ := next(t, ch, 0)
		require.Equal(t, []resolve.Endpoint{epA, epB}, first)

		p.set(epA.Addr, probeFail)
		got, _ := next(t, ch, time.Second)
		require.Equal(t, []resolve.Endpoint{epB}, got)
		p.set(epB.Addr, probeHang) // the sole provider left crashes
		bound := cfg.Interval*time.Duration(cfg.Failures) + cfg.Timeout
		got, took := next(t, ch, bound+cfg.Interval)
		require.Empty(t, got, "a watch sees no endpoint once all are down")
		require.LessOrEqual(t, took, bound, "Interval*Failures + Timeout")
		for _, st := range h.Status("svc.demo") {
			require.False(t, st.Up)
		}
		eps, err := h.Resolve(ctx, "svc.demo")
		require.ErrorIs(t, err, resolve.ErrAllDown)
		require.ErrorIs(t, err, resolve.ErrNotFound, "callers that know only ErrNotFound")
		require.Empty(t, eps)
		var re *resolve.Error
		require.ErrorAs(t, err, &re)
		require.Equal(t, "resolve", re.Op)
		require.Equal(t, "svc.demo", re.Service)
		require.NotErrorIs(t, resolve.ErrNotFound, resolve.ErrAllDown, "not the other way round")

		// A watch opened now starts empty too.
		ch2, err := h.Watch(ctx, "svc.demo")
		require.NoError(t, err)
		got, _ = next(t, ch2, 0)
		require.Empty(t, got)

		p.set(epB.Addr, probeOK)
		got, _ = next(t, ch, time.Second)
		require.Equal(t, []resolve.Endpoint{epB}, got)
		got, _ = next(t, ch2, 0)
		require.Equal(t, []resolve.Endpoint{epB}, got)
		eps, err = h.Resolve(ctx, "svc.demo")
		require.NoError(t, err)
		require.Equal(t, []resolve.Endpoint{epB}, eps)
	})
}

// With AnswerWhenAllDown, a service whose endpoints are all down resolves
// to all of them, and its watches keep them.
func TestHealthAllDownAnswersAllWhenAsked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := resolve.NewMemory()
		registerAll(t, mem, "svc.demo", epA, epB)
		p := newFakeProber()
		h := resolve.NewHealth(mem, p, resolve.HealthConfig{Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Failures: 2, AnswerWhenAllDown: true})
		defer h.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := h.Watch(ctx, "svc.demo")
		require.NoError(t, err)
		first, _ := next(t, ch, 0)
		require.Equal(t, []resolve.Endpoint{epA, epB}, first)
		p.set(epA.Addr, probeFail)
		got, _ := next(t, ch, time.Second)
		require.Equal(t, []resolve.Endpoint{epB}, got)
		p.set(epB.Addr, probeFail)
		got, _ = next(t, ch, time.Second)
		require.Equal(t, []resolve.Endpoint{epA, epB}, got, "all down: all answered")
		for _, st := range h.Status("svc.demo") {
			require.False(t, st.Up)
		}
		eps, err := h.Resolve(ctx, "svc.demo")
		require.NoError(t, err)
		require.Equal(t, []resolve.Endpoint{epA, epB}, eps)
	})
}

// A tracked service is probed before anyone asks, so the first answer is
// already healthy; an untracked one nobody asks about stops being probed.
func TestHealthTrackAndIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := resolve.NewMemory()
		p := newFakeProber()
		p.set(epA.Addr, probeFail)
		cfg := resolve.HealthConfig{Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Idle: 2 * time.Second}
		h := resolve.NewHealth(mem, p, cfg)
		defer h.Close()
		ctx := context.Background()

		h.Track("Tracked.demo") // before any registration
		registerAll(t, mem, "tracked.demo", epA, epB)
		time.Sleep(time.Second)
		require.Positive(t, p.count(epA.Addr))
		eps, err := h.Resolve(ctx, "tracked.demo")
		require.NoError(t, err)
		require.Equal(t, []resolve.Endpoint{epB}, eps, "the first answer already leaves the failing endpoint out")

		// Asked once, then forgotten: probing stops after Idle.
		registerAll(t, mem, "once.demo", epC)
		_, err = h.Resolve(ctx, "once.demo")
		require.NoError(t, err)
		time.Sleep(cfg.Idle + 2*cfg.Interval)
		synctest.Wait()
		require.Nil(t, h.Status("once.demo"))
		n := p.count(epC.Addr)
		require.Positive(t, n)
		time.Sleep(10 * cfg.Interval)
		require.Equal(t, n, p.count(epC.Addr), "an idle service is no longer probed")

		// Tracked services go on; Untrack lets them idle out.
		require.Len(t, h.Status("tracked.demo"), 2)
		h.Untrack("tracked.demo")
		time.Sleep(cfg.Idle + 2*cfg.Interval)
		require.Nil(t, h.Status("tracked.demo"))

		// A watch counts as asking for as long as it runs.
		wctx, cancel := context.WithCancel(ctx)
		_, err = h.Watch(wctx, "once.demo")
		require.NoError(t, err)
		time.Sleep(2 * cfg.Idle)
		require.Len(t, h.Status("once.demo"), 1)
		cancel()
		time.Sleep(cfg.Idle + 2*cfg.Interval)
		require.Nil(t, h.Status("once.demo"))
	})
}

// Over a resolver that cannot watch, Health still pushes health changes at
// once, and notices new endpoints by polling.
func TestHealthOverNonWatcher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		eps := []resolve.Endpoint{epA, epB}
		backend := resolverFunc(func(ctx context.Context, service string) ([]resolve.Endpoint, error) {
			mu.Lock()
			defer mu.Unlock()
			return eps, nil
		})
		p := newFakeProber()
		h := resolve.NewHealth(backend, p, resolve.HealthConfig{})
		defer h.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := h.Watch(ctx, "svc.demo")
		require.NoError(t, err)
		first, _ := next(t, ch, 0)
		require.Equal(t, []resolve.Endpoint{epA, epB}, first)

		p.set(epB.Addr, probeHang)
		got, took := next(t, ch, 5*time.Second)
		require.Equal(t, []resolve.Endpoint{epA}, got)
		require.LessOrEqual(t, took, 4*time.Second)

		mu.Lock()
		eps = []resolve.Endpoint{epA, epB, epC}
		mu.Unlock()
		got, took = next(t, ch, 2*time.Second)
		require.Equal(t, []resolve.Endpoint{epA, epC}, got, "B is still down")
		require.LessOrEqual(t, took, time.Second, "found at the next poll")
	})
}

// Endpoints withdrawn from the wrapped resolver stop being probed;
// probes never exceed Concurrency at once, and endpoints that never
// answered hold at most half of it.
func TestHealthWithdrawAndConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := resolve.NewMemory()
		var eps []resolve.Endpoint
		for i := range 10 {
			eps = append(eps, resolve.Endpoint{
				Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), 4000),
				Key:  resolve.Fingerprint{1, byte(i)}, // keys of their own: no key's budget binds
			})
		}
		p := newFakeProber()
		for _, ep := range eps {
			p.set(ep.Addr, probeHang)
		}
		h := resolve.NewHealth(mem, p, resolve.HealthConfig{Concurrency: 8})
		defer h.Close()
		h.Track("many.demo")
		var regs []resolve.Registration
		for _, ep := range eps {
			reg, err := mem.Register(context.Background(), "many.demo", ep)
			require.NoError(t, err)
			regs = append(regs, reg)
		}
		time.Sleep(5 * time.Second)
		p.mu.Lock()
		peak := p.peak
		p.mu.Unlock()
		require.Equal(t, 4, peak, "endpoints that never answered get half the slots")

		for _, reg := range regs {
			require.NoError(t, reg.Close())
		}
		synctest.Wait()
		require.Empty(t, h.Status("many.demo"))
		before := p.count(eps[0].Addr)
		time.Sleep(5 * time.Second)
		require.Equal(t, before, p.count(eps[0].Addr))
	})
}

// Registrations at addresses that never answer cannot starve the probes
// of a provider that does: when it crashes, it is out of answers within
// 5 s, beside 3,000 dead endpoints of 3,000 keys. Before the probes were
// scheduled by class, it stayed for more than 87 s. (A provider that
// registers after the flood is probed at once only when a registry says
// who registered what: TestRegistryDeadRegistrationsDoNotStarveProbes, in
// package registry.)
func TestHealthDeadEndpointsDoNotStarveLive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := resolve.NewMemory()
		p := newFakeProber()
		h := resolve.NewHealth(mem, p, resolve.HealthConfig{})
		defer h.Close()
		ctx := context.Background()
		live := resolve.Endpoint{Addr: epA.Addr, Key: resolve.Fingerprint{3}}
		h.Track("live.demo")
		registerAll(t, mem, "live.demo", live)
		time.Sleep(2 * time.Second)

		const dead = 3000
		for i := range dead {
			ep := resolve.Endpoint{
				Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 4000),
				Key:  resolve.Fingerprint{2, byte(i >> 8), byte(i)},
			}
			p.set(ep.Addr, probeHang)
			service := fmt.Sprintf("dead-%d.demo", i)
			h.Track(service)
			registerAll(t, mem, service, ep)
		}
		time.Sleep(10 * time.Second) // the dead ones fill their slots
		st := h.Status("live.demo")
		require.Len(t, st, 1)
		require.True(t, st[0].Up)
		require.Less(t, time.Since(st[0].Checked), 2*time.Second, "the live endpoint is probed meanwhile")

		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := h.Watch(wctx, "live.demo")
		require.NoError(t, err)
		first, _ := next(t, ch, 0)
		require.Equal(t, []resolve.Endpoint{live}, first)
		p.set(live.Addr, probeHang) // it crashes
		eps, took := next(t, ch, 120*time.Second)
		require.Empty(t, eps)
		require.Less(t, took, 5*time.Second, "out of answers within 5 s beside %d dead endpoints", dead)
		t.Logf("crashed provider out after %v beside %d dead endpoints", took, dead)
	})
}

// signedOnly is a resolver that only takes signed registrations.
type signedOnly struct {
	resolve.Resolver
	got string
}

func (s *signedOnly) RegisterSigned(ctx context.Context, service string, ep resolve.Endpoint, key crypto.Signer) (resolve.Registration, error) {
	s.got = service
	return nil, nil
}

func TestHealthPassesRegistrationsThrough(t *testing.T) {
	mem := resolve.NewMemory()
	cache := resolve.NewCache(mem, resolve.CacheConfig{})
	defer cache.Close()
	h := resolve.NewHealth(cache, newFakeProber(), resolve.HealthConfig{})
	defer h.Close()
	require.Same(t, resolve.Resolver(cache), h.Unwrap())
	reg, err := h.Register(context.Background(), "reg.demo", epA)
	require.NoError(t, err, "found through the Cache's Unwrap")
	eps, err := mem.Resolve(context.Background(), "reg.demo")
	require.NoError(t, err)
	require.Equal(t, []resolve.Endpoint{epA}, eps)
	require.NoError(t, reg.Close())

	_, priv, _ := ed25519.GenerateKey(nil)
	_, err = h.RegisterSigned(context.Background(), "reg.demo", epA, priv)
	require.ErrorIs(t, err, resolve.ErrUnsupported)

	s := &signedOnly{Resolver: mem}
	hs := resolve.NewHealth(s, newFakeProber(), resolve.HealthConfig{})
	defer hs.Close()
	_, err = hs.RegisterSigned(context.Background(), "Signed.demo", epA, priv)
	require.NoError(t, err)
	require.Equal(t, "Signed.demo", s.got)
	_, err = hs.Register(context.Background(), "plain.demo", epA)
	require.ErrorIs(t, err, resolve.ErrUnsupported)
}

func TestHealthErrorsAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := resolve.NewMemory()
		registerAll(t, mem, "svc.demo", epA)
		h := resolve.NewHealth(mem, newFakeProber(), resolve.HealthConfig{})
		defer h.Close()
		ctx := context.Background()

		_, err := h.Resolve(ctx, "missing.demo")
		require.ErrorIs(t, err, resolve.ErrNotFound)
		require.Nil(t, h.Status("missing.demo"), "nothing to probe")
		_, err = h.Resolve(ctx, "")
		require.ErrorIs(t, err, resolve.ErrInvalid)
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		_, err = h.Watch(cancelled, "svc.demo")
		require.ErrorIs(t, err, context.Canceled)

		// A watch of a service with no endpoint starts empty and sees the
		// first registration.
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		ch, err := h.Watch(wctx, "later.demo")
		require.NoError(t, err)
		eps, _ := next(t, ch, 0)
		require.Empty(t, eps)
		registerAll(t, mem, "later.demo", epB)
		eps, _ = next(t, ch, time.Second)
		require.Equal(t, []resolve.Endpoint{epB}, eps)

		require.NoError(t, h.Close())
		require.NoError(t, h.Close())
		_, ok := <-ch
		require.False(t, ok, "Close ends watches")
		_, err = h.Resolve(ctx, "svc.demo")
		require.ErrorIs(t, err, resolve.ErrClosed)
		_, err = h.Watch(ctx, "svc.demo")
		require.ErrorIs(t, err, resolve.ErrClosed)
		h.Track("svc.demo") // harmless
		require.Nil(t, h.Status("svc.demo"))
	})
}
