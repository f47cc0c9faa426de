package etcd_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/etcd"
	"github.com/roamnet/roam/resolve/etcd/internal/etcdtest"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// These tests kill etcd members, so each starts a cluster of its own, even
// where CI offers a shared one.

// leaderOf returns the index of the cluster's leader.
func leaderOf(t *testing.T, c *etcdtest.Cluster, alive ...int) int {
	t.Helper()
	eps := c.Endpoints()
	cli := rawEtcd(t, eps)
	deadline := time.Now().Add(etcdBound)
	for time.Now().Before(deadline) {
		ids := map[uint64]int{}
		var leader uint64
		for _, i := range alive {
			st, err := cli.Status(etcdCtx(t), eps[i])
			if err != nil {
				continue
			}
			ids[st.Header.MemberId] = i
			leader = st.Leader
		}
		if i, ok := ids[leader]; ok && leader != 0 {
			return i
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader")
	return -1
}

// stillThere checks that service keeps resolving to want for d, as it does
// only if its registrations' leases are kept alive all along.
func stillThere(t *testing.T, r resolve.Resolver, service string, want []resolve.Endpoint, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		eps, err := r.Resolve(etcdCtx(t), service)
		require.NoError(t, err)
		require.True(t, etcdSameEPs(eps, want), "got %v, want %v", eps, want)
	}
}

// TestEtcdMemberKilled kills one member of three, twice: first the one
// that carries a client's watch, then (once that one is back) the leader.
// Each time, resolution and the live watches go on, registrations keep
// their leases, and one made after the kill reaches every watcher.
func TestEtcdMemberKilled(t *testing.T) {
	c := etcdtest.Start(t, 3)
	eps := c.Endpoints()
	prefix := etcdtest.Prefix(t)
	// Leases of 2s keep their keep-alives clear of a loaded CI machine's
	// scheduling delays: etcd's client (v3.7) sends one TTL/3 after the
	// last answer, on its next 500 ms tick, so up to ~1.2 s apart, which
	// leaves ~0.8 s of the TTL to spare.
	const ttl = 2 * time.Second
	provider := newEtcd(t, eps, etcd.Config{Prefix: prefix, LeaseTTL: ttl, DialTimeout: time.Second})
	resolver := newEtcd(t, eps, etcd.Config{Prefix: prefix})
	const svc = "ha.demo"
	key, onlyA := etcdRegisterAt(t, provider, svc, "127.0.0.1:4000")
	ch, err := resolver.Watch(etcdCtx(t), svc)
	require.NoError(t, err)
	etcdWaitWatch(t, ch, onlyA)

	// The member that serves the watch: the only one with a watcher. The
	// first set comes from a listing, and etcd's watch opens after it, so
	// the carrier may take a moment to count its watcher.
	carrier := -1
	require.Eventually(t, func() bool {
		for i := range 3 {
			if c.Watchers(i) > 0 {
				carrier = i
			}
		}
		return carrier != -1
	}, etcdBound, 20*time.Millisecond, "some member serves the watch")

	survive := func(t *testing.T, killed int, port uint16) {
		alive := []int{}
		for i := range 3 {
			if i != killed {
				alive = append(alive, i)
			}
		}
		etcdWaitResolve(t, resolver, svc, onlyA)
		addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
		b, err := provider.RegisterSigned(etcdCtx(t), svc, resolve.Endpoint{Addr: addr}, key)
		require.NoError(t, err, "a registration after the kill")
		both := []resolve.Endpoint{onlyA[0], {Addr: addr, Key: onlyA[0].Key}}
		etcdWaitWatch(t, ch, both)
		etcdWaitResolve(t, resolver, svc, both)
		// (A set may come from a fresh listing, with the new watch still
		// opening.)
		require.Eventually(t, func() bool {
			serving := 0
			for _, i := range alive {
				serving += c.Watchers(i)
			}
			return serving > 0
		}, etcdBound, 20*time.Millisecond, "the watch lives on a surviving member")
		// Past two lease TTLs: the leases are kept alive through the
		// surviving members.
		stillThere(t, resolver, svc, both, 2*ttl)
		require.NoError(t, b.Close())
		etcdWaitWatch(t, ch, onlyA)
		require.Contains(t, alive, leaderOf(t, c, alive...))
	}

	t.Run("WatchCarrier", func(t *testing.T) {
		c.Kill(carrier)
		survive(t, carrier, 4001)
		// Back on its old data, the member catches up with what it missed.
		c.Restart(carrier)
		solo := newEtcd(t, []string{eps[carrier]}, etcd.Config{Prefix: prefix, StaleReads: true})
		etcdWaitResolve(t, solo, svc, onlyA)
	})
	t.Run("Leader", func(t *testing.T) {
		leader := leaderOf(t, c, 0, 1, 2)
		c.Kill(leader)
		survive(t, leader, 4002)
	})
}

// TestEtcdOutage checks that registrations outlast etcd being out of reach
// for longer than their lease.
func TestEtcdOutage(t *testing.T) {
	c := etcdtest.Start(t, 3)
	eps := c.Endpoints()
	prefix := etcdtest.Prefix(t)
	const ttl = 2 * time.Second // see TestEtcdMemberKilled
	observer := newEtcd(t, eps, etcd.Config{Prefix: prefix})
	key, fp := etcdSigner(t)

	// The provider knows one member only; while that one is down, the
	// others expire the lease. Once it is back, the provider registers
	// again, with a new lease.
	t.Run("CutOff", func(t *testing.T) {
		const svc = "cutoff.demo"
		var log resolvetest.LogBuffer
		provider := newEtcd(t, eps[:1], etcd.Config{Prefix: prefix, LeaseTTL: ttl, DialTimeout: time.Second, Logger: log.Logger()})
		reg, err := provider.RegisterSigned(etcdCtx(t), svc, resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, key)
		require.NoError(t, err)
		defer reg.Close()
		want := []resolve.Endpoint{etcdEP("127.0.0.1:4000", fp)}
		ch, err := observer.Watch(etcdCtx(t), svc)
		require.NoError(t, err)
		etcdWaitWatch(t, ch, want)

		c.Kill(0)
		etcdWaitWatch(t, ch, nil) // expired
		c.Restart(0)
		etcdWaitWatch(t, ch, want) // registered again
		// (The log line may trail the watch event.)
		require.Eventually(t, func() bool { return log.Has("registered again") }, etcdBound, 10*time.Millisecond,
			"a new lease, the record put again")
		stillThere(t, observer, svc, want, 2*ttl)
	})

	// The whole cluster stops for longer than the lease, then restarts:
	// etcd restores the lease, and the provider keeps it alive again.
	t.Run("WholeCluster", func(t *testing.T) {
		const svc = "blackout.demo"
		var log resolvetest.LogBuffer
		provider := newEtcd(t, eps, etcd.Config{Prefix: prefix, LeaseTTL: ttl, DialTimeout: time.Second, Logger: log.Logger()})
		reg, err := provider.RegisterSigned(etcdCtx(t), svc, resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, key)
		require.NoError(t, err)
		defer reg.Close()
		want := []resolve.Endpoint{etcdEP("127.0.0.1:4000", fp)}
		ch, err := observer.Watch(etcdCtx(t), svc)
		require.NoError(t, err)
		etcdWaitWatch(t, ch, want)

		for i := range 3 {
			c.Kill(i)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err = observer.Resolve(ctx, svc)
		cancel()
		require.Error(t, err, "nothing answers during the outage")
		// The client gives a lease up once a TTL has passed without an
		// answer, checking each second: restart only once it has, so that
		// the outage outlasts the lease as the client sees it, however
		// late a loaded machine runs that check.
		require.Eventually(t, func() bool { return log.Has("lost its lease") }, etcdBound, 10*time.Millisecond,
			"the outage outlasted the lease, as the client saw it")
		c.Restart(0, 1, 2)

		etcdWaitResolve(t, observer, svc, want)
		stillThere(t, observer, svc, want, 2*ttl)
		// The watch from before the outage goes on.
		b, err := provider.RegisterSigned(etcdCtx(t), svc, resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4001")}, key)
		require.NoError(t, err)
		defer b.Close()
		etcdWaitWatch(t, ch, append(want, etcdEP("127.0.0.1:4001", fp)))
	})
}
