package registry_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// Attacks on the registry by one unauthenticated peer, each beside an
// honest client, as README "Limits and abuse" lists them. bench/attack
// runs the same attacks longer, against the `roam registry` daemon.

// requireLimit checks that err is the registry refusing over limit.
func requireLimit(t *testing.T, err error, limit resolve.Limit) {
	t.Helper()
	require.ErrorIs(t, err, resolve.ErrLimit)
	var le *resolve.LimitError
	require.ErrorAs(t, err, &le)
	require.Equal(t, limit, le.Limit, "%v", err)
}

// honestRound registers, resolves and watches through a fresh client (a
// fresh connection, so a fresh handshake), as a Host that starts would.
func honestRound(t *testing.T, r *registry.Server, service string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := registry.NewClient(r.Addr().String(), registry.ClientConfig{Key: r.Key(), Signer: resolvetest.NewKey(t)})
	require.NoError(t, err)
	defer c.Close()
	reg, err := c.Register(ctx, service, resolve.Endpoint{Addr: addr("127.0.0.1:4000")})
	require.NoError(t, err, "honest registration")
	defer reg.Close()
	eps, err := c.Resolve(ctx, service)
	require.NoError(t, err, "honest lookup")
	require.Len(t, eps, 1)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	ch, err := c.Watch(wctx, service)
	require.NoError(t, err, "honest watch")
	require.Len(t, recv(t, ch), 1)
}

// Each limit refuses with a LimitError naming it, which the client reads
// from the wire, and a counter in the registry's stats.
func TestRegistryLimitsRefuseWithTypedErrors(t *testing.T) {
	ctx := context.Background()
	ep := func(port int) resolve.Endpoint {
		return resolve.Endpoint{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))}
	}
	t.Run("leases per key", func(t *testing.T) {
		r := startRegistry(t, registry.Config{MaxLeasesPerKey: 2})
		key := resolvetest.NewKey(t)
		c := registryClient(t, r, key)
		for i := range 2 {
			_, err := c.Register(ctx, fmt.Sprintf("k%d.demo", i), ep(4000))
			require.NoError(t, err)
		}
		_, err := c.Register(ctx, "k2.demo", ep(4000))
		requireLimit(t, err, resolve.LimitLeasesPerKey)
		var le *resolve.LimitError
		require.ErrorAs(t, err, &le)
		require.Equal(t, 2, le.Max)
		require.Equal(t, uint64(1), r.Stats().Limits.LeasesRefusedKey)
		// Another key is not held back by this one.
		_, err = registryClient(t, r, resolvetest.NewKey(t)).Register(ctx, "other.demo", ep(4000))
		require.NoError(t, err)
	})
	t.Run("leases per connection", func(t *testing.T) {
		r := startRegistry(t, registry.Config{MaxLeasesPerConn: 1})
		c := registryClient(t, r, nil)
		_, err := c.RegisterSigned(ctx, "a.demo", ep(4000), resolvetest.NewKey(t))
		require.NoError(t, err)
		_, err = c.RegisterSigned(ctx, "b.demo", ep(4000), resolvetest.NewKey(t))
		requireLimit(t, err, resolve.LimitLeasesPerConn)
		require.Equal(t, uint64(1), r.Stats().Limits.LeasesRefusedConn)
	})
	t.Run("leases", func(t *testing.T) {
		r := startRegistry(t, registry.Config{MaxLeases: 2})
		for i := range 2 {
			_, err := registryClient(t, r, resolvetest.NewKey(t)).Register(ctx, fmt.Sprintf("l%d.demo", i), ep(4000))
			require.NoError(t, err)
		}
		_, err := registryClient(t, r, resolvetest.NewKey(t)).Register(ctx, "l2.demo", ep(4000))
		requireLimit(t, err, resolve.LimitLeases)
		require.Equal(t, uint64(1), r.Stats().Limits.LeasesRefused)
	})
	t.Run("endpoints per service", func(t *testing.T) {
		r := startRegistry(t, registry.Config{MaxEndpoints: 2})
		c := registryClient(t, r, resolvetest.NewKey(t))
		for i := range 2 {
			_, err := c.Register(ctx, "e.demo", ep(4000+i))
			require.NoError(t, err)
		}
		_, err := c.Register(ctx, "e.demo", ep(4002))
		requireLimit(t, err, resolve.LimitEndpoints)
		// Registering a known address again renews it, within the limit.
		_, err = c.Register(ctx, "e.demo", ep(4001))
		require.NoError(t, err)
		require.Equal(t, uint64(1), r.Stats().Limits.EndpointsRefused)
	})
	t.Run("watches per connection", func(t *testing.T) {
		r := startRegistry(t, registry.Config{MaxWatchesPerConn: 2})
		c := registryClient(t, r, nil)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for i := range 2 {
			_, err := c.Watch(wctx, fmt.Sprintf("w%d.demo", i))
			require.NoError(t, err)
		}
		_, err := c.Watch(wctx, "w2.demo")
		requireLimit(t, err, resolve.LimitWatchesPerConn)
		require.Equal(t, uint64(1), r.Stats().Limits.WatchesRefusedConn)
		require.Equal(t, 2, r.Stats().Watches)
	})
	t.Run("watches", func(t *testing.T) {
		r := startRegistry(t, registry.Config{MaxWatches: 2})
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for i := range 2 {
			_, err := registryClient(t, r, nil).Watch(wctx, fmt.Sprintf("w%d.demo", i))
			require.NoError(t, err)
		}
		_, err := registryClient(t, r, nil).Watch(wctx, "w2.demo")
		requireLimit(t, err, resolve.LimitWatches)
		require.Equal(t, uint64(1), r.Stats().Limits.WatchesRefused)
		cancel()
		require.Eventually(t, func() bool { return r.Stats().Watches == 0 }, 5*time.Second, 5*time.Millisecond,
			"a watch that ends gives its place back")
	})
	for _, tc := range []struct {
		name  string
		limit resolve.Limit // what the client reads
		cfg   registry.Config
		stat  func(registry.LimitStats) uint64
	}{
		// An address at its limit must prove itself (with a Retry, or the
		// token of an earlier connection), and is then refused before its
		// handshake: CONNECTION_REFUSED.
		{"connections per address", resolve.LimitHandshakes, registry.Config{MaxConnsPerAddr: 2},
			func(s registry.LimitStats) uint64 { return s.ConnsRefusedAddr }},
		{"connections", resolve.LimitConns, registry.Config{MaxConns: 2},
			func(s registry.LimitStats) uint64 { return s.ConnsRefused }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRegistry(t, tc.cfg)
			var clients []*registry.Client
			for range 2 {
				c := registryClient(t, r, nil)
				_, err := c.Resolve(ctx, "x.demo")
				require.ErrorIs(t, err, resolve.ErrNotFound)
				clients = append(clients, c)
			}
			_, err := registryClient(t, r, nil).Resolve(ctx, "x.demo")
			requireLimit(t, err, tc.limit)
			require.ErrorIs(t, err, resolve.ErrUnavailable, "the registry is not there for this client")
			require.Positive(t, tc.stat(r.Stats().Limits)) // one per Initial the client sent
			// A connection that ends gives its place back.
			require.NoError(t, clients[0].Close())
			require.Eventually(t, func() bool {
				_, err := registryClient(t, r, nil).Resolve(ctx, "x.demo")
				return err != nil && !errors.Is(err, resolve.ErrLimit)
			}, 10*time.Second, 50*time.Millisecond)
		})
	}
}

// fakeInitial is a QUIC v1 Initial packet with a random connection ID and
// a payload nobody can decrypt: what a spoofing attacker sends. A server
// that keeps state for it until the handshake times out is open to a flood.
func fakeInitial() []byte {
	p := make([]byte, 1200)
	rand.Read(p)
	p[0] = 0xc3 // long header, fixed bit, Initial, 4-byte packet number
	binary.BigEndian.PutUint32(p[1:], 1)
	p[5] = 16 // destination connection ID length; 16 random bytes follow
	p[22] = 8 // source connection ID length; 8 random bytes follow
	p[31] = 0 // no token
	binary.BigEndian.PutUint16(p[32:], uint16(len(p)-34)|0x4000)
	return p
}

// A flood of spoofed Initials costs the registry no state once
// RetryThreshold handshakes are in progress, and an honest client still
// gets in. Before the Retry and the cap, 5,000 Initials made 10,000
// goroutines that lived for the handshake timeout.
func TestRegistryHandshakeFlood(t *testing.T) {
	r := startRegistry(t, registry.Config{})
	honestRound(t, r, "calm.demo")
	runtime.GC()
	base := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	var attackers sync.WaitGroup
	sent := make(chan int, 4)
	for i := range 4 {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(10+i))})
		require.NoError(t, err)
		defer pc.Close()
		attackers.Go(func() {
			n := 0
			for ctx.Err() == nil && n < 2500 {
				pc.WriteTo(fakeInitial(), r.Addr())
				if n++; n%50 == 0 {
					time.Sleep(5 * time.Millisecond) // about 10k packets/s from the four
				}
			}
			sent <- n
		})
	}
	peak := 0
	done := make(chan struct{})
	go func() { attackers.Wait(); close(done) }()
	honest := 0
watch:
	for {
		select {
		case <-done:
			break watch
		case <-time.After(100 * time.Millisecond):
		}
		peak = max(peak, runtime.NumGoroutine()-base)
		require.LessOrEqual(t, r.Stats().Handshakes, 512)
		if honest < 3 {
			honestRound(t, r, fmt.Sprintf("flood%d.demo", honest))
			honest++
		}
	}
	cancel()
	total := 0
	for range 4 {
		total += <-sent
	}
	st := r.Stats()
	t.Logf("%d fake Initials: goroutines +%d at most, %d Retries, %d handshakes refused", total, peak, st.Limits.Retries, st.Limits.HandshakesRefused)
	require.Positive(t, st.Limits.Retries, "the flood was answered with Retries")
	require.Less(t, peak, 1000, "the flood holds few goroutines")
	honestRound(t, r, "after.demo")
	// The handshakes the flood began before the Retries end at their
	// timeout (5 s), and their goroutines with them.
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+base/10+5 }, 15*time.Second, 100*time.Millisecond,
		"goroutines back to the baseline of %d", base)
}

// A client's watches end with its connection: nothing is left running of
// a client that left, even with a Prober (whose services lingered for
// HealthConfig.Idle, a minute, each with a goroutine).
func TestRegistryWatchesEndWithClient(t *testing.T) {
	prober := resolve.ProberFunc(func(ctx context.Context, service string, ep resolve.Endpoint) error { return nil })
	r := startRegistry(t, registry.Config{Prober: prober, MaxWatchesPerConn: 4096})
	honestRound(t, r, "calm.demo")
	// The honest round's watches end as the registry sees its client go,
	// which a busy machine may not have done yet.
	require.Eventually(t, func() bool { return r.Stats().Watches == 0 }, 10*time.Second, 10*time.Millisecond)
	runtime.GC()
	base := runtime.NumGoroutine()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	const watches = 2000
	c, err := registry.NewClient(r.Addr().String(), registry.ClientConfig{Key: r.Key()})
	require.NoError(t, err)
	ctx := context.Background()
	for i := range watches {
		_, err := c.Watch(ctx, fmt.Sprintf("w%d.demo", i))
		require.NoError(t, err)
	}
	// Each Watch holds one watch at the registry. A straggler of the
	// honest round (its client's cache renewing one) may still land, on a
	// busy machine: CI counted 2001 once.
	require.GreaterOrEqual(t, r.Stats().Watches, watches)
	require.LessOrEqual(t, r.Stats().Watches, watches+4)
	during := runtime.NumGoroutine() - base
	grown := heapGrowth(&before)
	t.Logf("%d watches: goroutines +%d, heap +%d KiB", watches, during, grown>>10)
	require.Less(t, during, 100, "a watch costs no goroutine")
	// Sample the goroutines while the watches end: ending each through a
	// context.AfterFunc started one goroutine per watch, all at once, and
	// the runtime keeps a record of every goroutine that ever ran at once.
	sampling := make(chan int)
	go func() {
		peak := 0
		for range 2000 {
			peak = max(peak, runtime.NumGoroutine())
			time.Sleep(100 * time.Microsecond)
		}
		sampling <- peak
	}()
	require.NoError(t, c.Close())
	closed := time.Now()
	require.Eventually(t, func() bool { return r.Stats().Watches == 0 && runtime.NumGoroutine() <= base+5 }, 10*time.Second, 10*time.Millisecond,
		"goroutines back to the baseline of %d", base)
	require.Less(t, time.Since(closed), 2*time.Second, "at once")
	endPeak := <-sampling - base
	t.Logf("while the watches ended: goroutines +%d at most", endPeak)
	require.Less(t, endPeak, 100, "ending a watch costs no goroutine")
	left := heapGrowth(&before)
	t.Logf("after the client left: heap +%d KiB", left>>10)
	require.Less(t, left, grown/4, "the watches' state is gone too")
}

// heapGrowth returns how much the live heap grew since before, after
// collecting twice (the second runs the cleanups the first queued).
func heapGrowth(before *runtime.MemStats) int64 {
	runtime.GC()
	runtime.GC()
	var now runtime.MemStats
	runtime.ReadMemStats(&now)
	return int64(now.HeapAlloc) - int64(before.HeapAlloc)
}

// A flood of leases from fresh keys is bounded in memory and costs no
// goroutine per lease; withdrawn, it leaves nothing behind. Before, each
// lease held two goroutines (a service's follower and an endpoint's probe
// loop) and about 8 KiB.
func TestRegistryLeaseFloodBounded(t *testing.T) {
	dead := resolve.ProberFunc(func(ctx context.Context, service string, ep resolve.Endpoint) error {
		<-ctx.Done()
		return ctx.Err()
	})
	r := startRegistry(t, registry.Config{Prober: dead})
	honestRound(t, r, "calm.demo")
	runtime.GC()
	base := runtime.NumGoroutine()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	const leases = 2000
	ctx := context.Background()
	var clients []*registry.Client
	var c *registry.Client
	for i := range leases {
		if i%256 == 0 { // MaxLeasesPerConn
			var err error
			c, err = registry.NewClient(r.Addr().String(), registry.ClientConfig{Key: r.Key(), LocalAddr: "127.0.0.3:0"})
			require.NoError(t, err)
			clients = append(clients, c)
		}
		key := resolvetest.NewKey(t)
		service := "rk--" + resolvetest.Fingerprint(t, key).String() + ".flood"
		_, err := c.RegisterSigned(ctx, service, resolve.Endpoint{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(10000+i))}, key)
		require.NoError(t, err)
	}
	honestRound(t, r, "during.demo")
	grown := heapGrowth(&before)
	perLease := grown / leases
	goroutines := runtime.NumGoroutine() - base
	t.Logf("%d leases: %d bytes of heap each, goroutines +%d", leases, perLease, goroutines)
	require.Less(t, goroutines, 200, "no goroutine per lease")
	require.Less(t, perLease, int64(6<<10))

	for _, c := range clients {
		require.NoError(t, c.Close()) // withdraws
	}
	// Under a loaded CI machine the withdrawals and the goroutines' ends
	// take a while; what matters is that they come, so the wait is long
	// and the failure says which part did not.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, left := r.Stats(), runtime.NumGoroutine()
		if st.Leases == 0 && st.Names == st.HeldNames && left <= base+base/10+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %d leases, %d names (%d held), %d goroutines (base %d): want no lease, no self-certifying name, goroutines back",
				st.Leases, st.Names, st.HeldNames, left, base)
		}
		time.Sleep(10 * time.Millisecond)
	}
	left := heapGrowth(&before)
	t.Logf("withdrawn: heap +%d KiB (the test's own clients included)", left>>10)
	require.Less(t, left, grown/4, "the leases' state is gone")
}

// A crashed provider is out of the registry's answers within 5 s beside
// 3,000 registrations at addresses that never answer, made by one peer
// under 3,000 keys, even when the provider registered after them: probes
// are charged to the address that registered, so the flood waits for
// itself. Before, the probes ran 64 at a time in one line, and the crashed
// provider stayed for more than 87 s.
func TestRegistryDeadRegistrationsDoNotStarveProbes(t *testing.T) {
	ctx := context.Background()
	live := addr("127.0.0.1:4000")
	var crashed atomic.Bool
	var liveProbes atomic.Int32
	prober := resolve.ProberFunc(func(ctx context.Context, service string, ep resolve.Endpoint) error {
		if ep.Addr == live && !crashed.Load() {
			liveProbes.Add(1)
			return nil
		}
		<-ctx.Done() // nothing answers there
		return ctx.Err()
	})
	r := startRegistry(t, registry.Config{Prober: prober, MaxLeasesPerConn: 4096})
	attacker, err := registry.NewClient(r.Addr().String(), registry.ClientConfig{Key: r.Key(), LocalAddr: "127.0.0.2:0"})
	require.NoError(t, err)
	defer attacker.Close()
	const dead = 3000
	for i := range dead {
		ep := resolve.Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 4000)}
		_, err := attacker.RegisterSigned(ctx, fmt.Sprintf("dead%d.demo", i), ep, resolvetest.NewKey(t))
		require.NoError(t, err)
	}
	provider := registryClient(t, r, resolvetest.NewKey(t))
	_, err = provider.Register(ctx, "live.demo", resolve.Endpoint{Addr: live})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return liveProbes.Load() >= 2 }, 5*time.Second, 10*time.Millisecond,
		"the provider is probed beside the flood")

	watcher := registryClient(t, r, nil)
	ch, err := watcher.Watch(ctx, "live.demo")
	require.NoError(t, err)
	require.Len(t, recv(t, ch), 1)
	crashed.Store(true)
	start := time.Now()
	require.Empty(t, recv(t, ch))
	took := time.Since(start)
	t.Logf("crashed provider out of answers after %v beside %d dead registrations", took, dead)
	require.Less(t, took, 5*time.Second)
}

// A client of a registry that the process reached before presents the
// address-validation token it got, and skips the Retry that a registry
// under a flood asks of unknown clients (and whose queue, under a flood,
// drops Initials: beside 10k fake Initials/s, fresh clients kept 21% of
// their calm rate, and 88% with the token).
func TestClientSkipsRetryWithToken(t *testing.T) {
	r := startRegistry(t, registry.Config{RetryThreshold: -1}) // a Retry for every unknown client
	ctx := context.Background()
	_, err := registryClient(t, r, nil).Resolve(ctx, "x.demo")
	require.ErrorIs(t, err, resolve.ErrNotFound)
	retries := r.Stats().Limits.Retries
	require.Positive(t, retries, "the first contact proves its address")
	for range 3 {
		c := registryClient(t, r, nil)
		_, err := c.Resolve(ctx, "x.demo")
		require.ErrorIs(t, err, resolve.ErrNotFound)
		require.NoError(t, c.Close())
	}
	require.Equal(t, retries, r.Stats().Limits.Retries, "later clients present a token")
}
