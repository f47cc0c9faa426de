package registry_test

import (
	"context"
	"crypto"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/resolve/resolvetest"
	"github.com/roamnet/roam/sal"
	"github.com/roamnet/roam/sal/saltest"
)

// startRegistry serves a Server on a loopback port until the test ends.
func startRegistry(t testing.TB, cfg registry.Config) *registry.Server {
	r, err := registry.Listen("127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

// registryClient opens a client to r with its key pinned; signer may be nil.
func registryClient(t testing.TB, r *registry.Server, signer crypto.Signer) *registry.Client {
	c, err := registry.NewClient(r.Addr().String(), registry.ClientConfig{Key: r.Key(), Signer: signer})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func addr(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestRegistryConformance(t *testing.T) {
	resolvetest.RunSigned(t, func(t *testing.T) resolve.Resolver {
		return registryClient(t, startRegistry(t, registry.Config{}), nil)
	})
}

func TestRegistryOpen(t *testing.T) {
	r := startRegistry(t, registry.Config{})
	res, err := resolve.Open(context.Background(), r.URL())
	require.NoError(t, err)
	defer res.(interface{ Close() error }).Close()
	_, ok := res.(resolve.SignedRegistrar)
	require.True(t, ok, "a registry:// resolver registers")
	_, ok = res.(resolve.Watcher)
	require.True(t, ok, "a registry:// resolver watches")

	key := resolvetest.NewKey(t)
	reg, err := res.(resolve.SignedRegistrar).RegisterSigned(context.Background(), "echo.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4000")}, key)
	require.NoError(t, err)
	defer reg.Close()
	eps, err := res.Resolve(context.Background(), "Echo.Demo")
	require.NoError(t, err)
	require.Len(t, eps, 1)
	require.Equal(t, resolvetest.Fingerprint(t, key), eps[0].Key, "the registry pins the registering key")

	// A wrong pin is refused in the handshake.
	bad := "registry://" + r.Addr().String() + "?key=" + resolvetest.Fingerprint(t, resolvetest.NewKey(t)).String()
	other, err := resolve.Open(context.Background(), bad)
	require.NoError(t, err)
	defer other.(interface{ Close() error }).Close()
	_, err = other.Resolve(context.Background(), "echo.demo")
	require.ErrorIs(t, err, resolve.ErrUnavailable)
	require.ErrorIs(t, err, registry.ErrKeyMismatch)
}

func TestRegistryOwnership(t *testing.T) {
	ctx := context.Background()
	r := startRegistry(t, registry.Config{})
	owner, rogue := resolvetest.NewKey(t), resolvetest.NewKey(t)
	c := registryClient(t, r, nil)

	reg, err := c.RegisterSigned(ctx, "bank.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4000")}, owner)
	require.NoError(t, err)

	// A rogue key cannot add an endpoint to a bound name...
	_, err = c.RegisterSigned(ctx, "bank.demo", resolve.Endpoint{Addr: addr("127.0.0.1:6666")}, rogue)
	require.ErrorIs(t, err, resolve.ErrNotOwner)
	require.Contains(t, err.Error(), resolvetest.Fingerprint(t, owner).String(), "the refusal names the key that holds the name")
	require.Contains(t, err.Error(), "1 live registration")
	// ...nor claim a self-certifying ID that names another key...
	selfCert := "rk--" + resolvetest.Fingerprint(t, owner).String() + ".bank.demo"
	_, err = c.RegisterSigned(ctx, selfCert, resolve.Endpoint{Addr: addr("127.0.0.1:6666")}, rogue)
	require.ErrorIs(t, err, resolve.ErrNotOwner)
	// ...nor register without a key at all.
	_, err = c.Register(ctx, "bank.demo", resolve.Endpoint{Addr: addr("127.0.0.1:6666")})
	require.ErrorIs(t, err, resolve.ErrUnsigned)
	// The owner may.
	reg2, err := c.RegisterSigned(ctx, selfCert, resolve.Endpoint{Addr: addr("127.0.0.1:4001")}, owner)
	require.NoError(t, err)
	defer reg2.Close()

	// The binding outlives the registration, so a crash-and-restart of the
	// provider does not hand its name to whoever registers first.
	require.NoError(t, reg.Close())
	_, err = c.RegisterSigned(ctx, "bank.demo", resolve.Endpoint{Addr: addr("127.0.0.1:6666")}, rogue)
	require.ErrorIs(t, err, resolve.ErrNotOwner)
	// A provider restarted with a fresh key meets this refusal: it must say
	// who holds the name, until when, and what to do.
	require.Contains(t, err.Error(), resolvetest.Fingerprint(t, owner).String())
	require.Regexp(t, `until 20\d\d-\d\d-\d\dT`, err.Error())
	require.Contains(t, err.Error(), "sal.LoadKey")
	eps, err := c.Resolve(ctx, "bank.demo")
	require.ErrorIs(t, err, resolve.ErrNotFound, "withdrawn, and no rogue endpoint: %v", eps)
	require.Positive(t, r.Stats().Refused)
}

// A provider that vanishes without withdrawing is gone when its lease ends.
func TestRegistryLeaseExpiry(t *testing.T) {
	ctx := context.Background()
	r := startRegistry(t, registry.Config{LeaseTTL: 300 * time.Millisecond})
	watcher := registryClient(t, r, nil)
	ch, err := watcher.Watch(ctx, "crash.demo")
	require.NoError(t, err)
	require.Empty(t, <-ch)

	provider, err := registry.NewClient(r.Addr().String(), registry.ClientConfig{Key: r.Key()})
	require.NoError(t, err)
	_, err = provider.RegisterSigned(ctx, "crash.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4000")}, resolvetest.NewKey(t))
	require.NoError(t, err)
	require.Len(t, recv(t, ch), 1)
	registry.CrashClient(provider) // no withdrawal, no renewal
	start := time.Now()
	require.Empty(t, recv(t, ch))
	require.Less(t, time.Since(start), 3*time.Second)
	require.Equal(t, uint64(1), r.Stats().Expired)
}

func recv(t testing.TB, ch <-chan []resolve.Endpoint) []resolve.Endpoint {
	t.Helper()
	select {
	case eps, ok := <-ch:
		require.True(t, ok, "watch closed")
		return eps
	case <-time.After(10 * time.Second):
		t.Fatal("no update within 10s")
		return nil
	}
}

// After a registry restart, watches resume and providers re-register
// within one lease.
func TestRegistryRestart(t *testing.T) {
	ctx := context.Background()
	key := resolvetest.NewKey(t) // a fixed registry key: clients keep their pin
	const ttl = 2 * time.Second
	// Answers that outlive the test: the cache can only learn of a change
	// through its watch, never by an answer expiring and being looked up
	// again.
	cfg := registry.Config{Key: key, LeaseTTL: ttl, AnswerTTL: time.Hour}
	// The socket outlives the first registry, so the second one comes back
	// at the same address without binding a freed port, which another
	// process could take meanwhile.
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() }) // after the registries'
	r1 := serveRegistry(t, keptConn{pc}, cfg)

	provider := registryClient(t, r1, resolvetest.NewKey(t))
	reg, err := provider.Register(ctx, "svc.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4000")})
	require.NoError(t, err)
	defer reg.Close()
	client := registryClient(t, r1, nil)
	cache := resolve.NewCache(client, resolve.CacheConfig{})
	defer cache.Close()
	_, err = cache.Resolve(ctx, "svc.demo")
	require.NoError(t, err)
	// The cache opens its watch after the miss, in the background: wait for
	// the watch's first set, or the restart could find it still opening
	// (a watch that fails to open leaves the answer to expire instead).
	require.Eventually(t, func() bool { return cache.Stats().Updates > 0 }, 10*time.Second, time.Millisecond, "the cache watches")

	require.NoError(t, r1.Close())
	// While the registry is down, the cache still answers.
	eps, err := cache.Resolve(ctx, "svc.demo")
	require.NoError(t, err)
	require.Len(t, eps, 1)

	r2 := serveRegistry(t, keptConn{pc}, cfg)
	restarted := time.Now()
	require.Eventually(t, func() bool {
		eps, err := r2.Resolve(ctx, "svc.demo")
		return err == nil && len(eps) == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.Less(t, time.Since(restarted), ttl, "re-registered within one lease")

	// The client's watches came back too: a change at r2 reaches the cache.
	reg2, err := provider.Register(ctx, "svc.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4001")})
	require.NoError(t, err)
	defer reg2.Close()
	require.Eventually(t, func() bool {
		eps, err := cache.Resolve(ctx, "svc.demo")
		return err == nil && len(eps) == 2
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(1), cache.Stats().Lookups, "pushed by the watch, not looked up again")
}

// keptConn is a socket that a Server's Close leaves open.
type keptConn struct{ *net.UDPConn }

func (keptConn) Close() error { return nil }

// serveRegistry serves a Server on pc until the test ends.
func serveRegistry(t testing.TB, pc net.PacketConn, cfg registry.Config) *registry.Server {
	t.Helper()
	r, err := registry.New(cfg)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- r.Serve(pc) }()
	t.Cleanup(func() { r.Close(); <-served })
	for r.Addr() == nil {
		select {
		case err := <-served:
			t.Fatalf("serve: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	return r
}

func TestRegistryLimits(t *testing.T) {
	ctx := context.Background()
	r := startRegistry(t, registry.Config{MaxLeasesPerConn: 2})
	c := registryClient(t, r, resolvetest.NewKey(t))
	for i := range 2 {
		reg, err := c.Register(ctx, "many.demo", resolve.Endpoint{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(4000+i))})
		require.NoError(t, err)
		defer reg.Close()
	}
	_, err := c.Register(ctx, "many.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4009")})
	require.Error(t, err)
	var re *resolve.Error
	require.ErrorAs(t, err, &re)
	require.Equal(t, "register", re.Op)

	// Malformed names and addresses are refused as invalid.
	for _, name := range []string{"-bad.demo", "a..b", "rk--nope.demo", "sp ace"} {
		_, err := c.Register(ctx, name, resolve.Endpoint{Addr: addr("127.0.0.1:4000")})
		require.ErrorIs(t, err, resolve.ErrInvalid, name)
	}
}

// An unspecified address means the machine the registration came from.
func TestRegistryUnspecifiedAddr(t *testing.T) {
	ctx := context.Background()
	r := startRegistry(t, registry.Config{})
	c := registryClient(t, r, resolvetest.NewKey(t))
	reg, err := c.Register(ctx, "here.demo", resolve.Endpoint{Addr: addr("0.0.0.0:4000")})
	require.NoError(t, err)
	defer reg.Close()
	eps, err := c.Resolve(ctx, "here.demo")
	require.NoError(t, err)
	require.Equal(t, addr("127.0.0.1:4000"), eps[0].Addr)
}

// Garbage on the wire ends only the sender's connection.
func TestRegistryGarbage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := startRegistry(t, registry.Config{})
	require.NoError(t, registry.SendGarbage(ctx, r.Addr().(*net.UDPAddr), r.Key(), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}))
	c := registryClient(t, r, resolvetest.NewKey(t))
	reg, err := c.Register(ctx, "ok.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4000")})
	require.NoError(t, err)
	reg.Close()
}

// Two Hosts meet through the registry, and a flow follows its provider's
// Rebind through the registry's watch.
func TestRegistryHosts(t *testing.T) {
	r := startRegistry(t, registry.Config{})
	saltest.RunHosts(t, func(t *testing.T) resolve.Resolver {
		res, err := resolve.Open(context.Background(), r.URL())
		require.NoError(t, err)
		t.Cleanup(func() { res.(interface{ Close() error }).Close() })
		return res
	})
}

// A provider that dies without withdrawing, while its lease is still being
// renewed, drops out of the registry's answers within 5 s through health
// probes, while a healthy one stays.
func TestRegistryHealth(t *testing.T) {
	ctx := context.Background()
	prober, err := sal.NewHost(sal.Config{Resolver: resolve.NewStatic(nil), ListenAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	defer prober.Close()
	// Short probes: a dead provider is out within Interval*Failures +
	// Timeout, about 1 s here (4 s with the defaults), which leaves most of
	// the 5 s bound to a loaded machine's delays.
	health := resolve.HealthConfig{Interval: 200 * time.Millisecond, Timeout: 300 * time.Millisecond}
	r := startRegistry(t, registry.Config{Prober: prober, Health: health, LeaseTTL: time.Minute})
	agent := registryClient(t, r, nil) // renews the leases, whatever becomes of the providers

	key := resolvetest.NewKey(t) // two replicas of one service share its key
	var hosts [2]*sal.Host
	for i := range hosts {
		h, err := sal.NewHost(sal.Config{Resolver: resolve.NewMemory(), ListenAddr: "127.0.0.1:0", Key: key})
		require.NoError(t, err)
		defer h.Close()
		ln, err := h.Listen(ctx, "health.demo")
		require.NoError(t, err)
		defer ln.Close()
		reg, err := agent.RegisterSigned(ctx, "health.demo", resolve.Endpoint{Addr: h.LocalAddr()}, key)
		require.NoError(t, err)
		defer reg.Close()
		hosts[i] = h
	}
	watcher := registryClient(t, r, nil)
	ch, err := watcher.Watch(ctx, "health.demo")
	require.NoError(t, err)
	require.Len(t, recv(t, ch), 2)

	require.NoError(t, hosts[0].Close())
	died := time.Now()
	eps := recv(t, ch)
	require.Less(t, time.Since(died), 5*time.Second, "out of answers within 5 s")
	require.Len(t, eps, 1)
	require.Equal(t, hosts[1].LocalAddr(), eps[0].Addr)
	got, err := watcher.Resolve(ctx, "health.demo")
	require.NoError(t, err)
	require.Equal(t, eps, got)
	require.Equal(t, 2, r.Stats().Leases, "the lease lives on; only health left it out")

	// The last provider dies too: the service resolves to none, and a
	// remote client learns why (the wire's CodeAllDown), not the dead
	// endpoints until their leases end.
	require.NoError(t, hosts[1].Close())
	died = time.Now()
	eps = recv(t, ch)
	require.Less(t, time.Since(died), 5*time.Second, "out of answers within 5 s")
	require.Empty(t, eps, "the watch sees no endpoint")
	_, err = watcher.Resolve(ctx, "health.demo")
	require.ErrorIs(t, err, resolve.ErrAllDown)
	require.ErrorIs(t, err, resolve.ErrNotFound)
	_, err = r.Resolve(ctx, "health.demo")
	require.ErrorIs(t, err, resolve.ErrAllDown, "in the registry's own process too")
	require.Equal(t, 2, r.Stats().Leases)
}
