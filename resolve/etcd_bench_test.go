package resolve_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/etcdtest"
)

// etcdBenchBackends adds etcd to BenchmarkBackends, where it runs beside
// the other backends under the same sal Hosts. Without an etcd binary
// (outside CI) the comparison goes on without it.
func etcdBenchBackends(b *testing.B) []benchBackend {
	if !etcdtest.Installed() {
		b.Log("etcd not installed: BenchmarkBackends leaves it out")
		return nil
	}
	endpoints := etcdtest.Endpoints(b)
	prefix := etcdtest.Prefix(b)
	open := func(b *testing.B) resolve.Resolver {
		return newEtcd(b, endpoints, resolve.EtcdConfig{Prefix: prefix})
	}
	// An Etcd keeps nothing: every Resolve asks the cluster.
	return []benchBackend{{name: "etcd", open: open, uncached: open}}
}

// BenchmarkEtcd measures the backend alone: one Resolve asking the cluster
// (a linearizable read, and a serializable one), the same through a Cache
// (where a hit must not allocate), lookups per second from many
// goroutines, and how long a registration change takes to reach a watcher
// on another connection.
func BenchmarkEtcd(b *testing.B) {
	endpoints := etcdtest.Endpoints(b)
	prefix := etcdtest.Prefix(b)
	e := newEtcd(b, endpoints, resolve.EtcdConfig{Prefix: prefix})
	stale := newEtcd(b, endpoints, resolve.EtcdConfig{Prefix: prefix, StaleReads: true})
	key, _ := etcdSigner(b)
	ctx := context.Background()
	reg, err := e.RegisterSigned(ctx, "bench.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, key)
	require.NoError(b, err)
	b.Cleanup(func() { reg.Close() })

	for _, x := range []struct {
		name string
		r    resolve.Resolver
	}{{"resolve-uncached", e}, {"resolve-uncached-stale", stale}} {
		b.Run(x.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := x.r.Resolve(ctx, "bench.demo"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("resolve-cached", func(b *testing.B) {
		c := resolve.NewCache(e, resolve.CacheConfig{})
		defer c.Close()
		_, err := c.Resolve(ctx, "bench.demo")
		require.NoError(b, err)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Resolve(ctx, "bench.demo"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lookups-parallel", func(b *testing.B) {
		b.SetParallelism(32) // many dials share one client
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := e.Resolve(ctx, "bench.demo"); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
	})
	b.Run("watch-propagation", func(b *testing.B) {
		watcher := newEtcd(b, endpoints, resolve.EtcdConfig{Prefix: prefix})
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := watcher.Watch(wctx, "moving.demo")
		require.NoError(b, err)
		// await waits until the watcher's set holds addr, or no longer does.
		await := func(addr netip.AddrPort, present bool) {
			for {
				select {
				case eps := <-ch:
					if slices.ContainsFunc(eps, func(ep resolve.Endpoint) bool { return ep.Addr == addr }) == present {
						return
					}
				case <-time.After(etcdBound):
					b.Fatalf("the watcher did not see %v (present %v)", addr, present)
				}
			}
		}
		// Each round is two changes: a registration (lease, transaction)
		// and a withdrawal (revocation).
		var took []time.Duration
		for i := 0; b.Loop(); i++ {
			addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(5000+i%1000))
			start := time.Now()
			r, err := e.RegisterSigned(ctx, "moving.demo", resolve.Endpoint{Addr: addr}, key)
			require.NoError(b, err)
			await(addr, true)
			took = append(took, time.Since(start))
			start = time.Now()
			require.NoError(b, r.Close())
			await(addr, false)
			took = append(took, time.Since(start))
		}
		slices.Sort(took)
		b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
		b.ReportMetric(ms(took[(len(took)*99)/100]), "p99-ms")
	})
}
