package saltest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// BenchBackend is one backend under BenchBackends, serving one service
// whose provider is a sal Host.
type BenchBackend struct {
	Name string
	// Open returns a fresh client of the backend (one per Host, as two
	// processes would have).
	Open func(b *testing.B) resolve.Resolver
	// Uncached returns a resolver that asks the backend at every call.
	Uncached func(b *testing.B) resolve.Resolver
	// Published is called after the provider Rebinds, for backends (DNS)
	// where an operator, not the Host, publishes addresses.
	Published func(h *sal.Host)
}

// BenchBackends compares backends in one run, each as a sub-benchmark:
// Resolve latency with and without the Cache, lookups per second from
// many goroutines, and watch propagation, the time from a provider's
// Rebind to a watcher's update. The resolve package runs it for its own
// backends, and each plug-in backend's module for its own, so that every
// backend is measured the same way.
func BenchBackends(b *testing.B, backends []BenchBackend) {
	for _, bb := range backends {
		b.Run(bb.Name, func(b *testing.B) {
			ctx := context.Background()
			provider := benchHost(b, bb.Open(b))
			ln, err := provider.Listen(ctx, "bench.demo")
			require.NoError(b, err)
			b.Cleanup(func() { ln.Close() })
			if bb.Published != nil {
				bb.Published(provider)
			}
			direct := bb.Uncached(b)
			require.Eventually(b, func() bool {
				_, err := direct.Resolve(ctx, "bench.demo")
				return err == nil
			}, 10*time.Second, 10*time.Millisecond)

			b.Run("resolve-uncached", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := direct.Resolve(ctx, "bench.demo"); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("resolve-cached", func(b *testing.B) {
				c := resolve.NewCache(bb.Open(b), resolve.CacheConfig{})
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
				b.SetParallelism(32) // many callers share one client, as a busy Host's dials do
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := direct.Resolve(ctx, "bench.demo"); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
			})
			b.Run("watch-propagation", func(b *testing.B) {
				benchWatchPropagation(b, bb, provider)
			})
		})
	}
}

func benchHost(b *testing.B, r resolve.Resolver) *sal.Host {
	h, err := sal.NewHost(sal.Config{Resolver: r, ListenAddr: "127.0.0.1:0"})
	require.NoError(b, err)
	b.Cleanup(func() { h.Close() })
	return h
}

// benchWatchPropagation rebinds the provider b.N times and times each
// Rebind's way to a watcher of the backend.
func benchWatchPropagation(b *testing.B, bb BenchBackend, provider *sal.Host) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, ok := bb.Open(b).(resolve.Watcher)
	if !ok {
		b.Skip("no watch")
	}
	ch, err := w.Watch(ctx, "bench.demo")
	require.NoError(b, err)
	var took []time.Duration
	for b.Loop() {
		start := time.Now()
		require.NoError(b, provider.Rebind(ctx, "127.0.0.1:0"))
		if bb.Published != nil {
			bb.Published(provider)
		}
		want := provider.LocalAddr()
	wait:
		for {
			select {
			case eps := <-ch:
				if slices.ContainsFunc(eps, func(ep resolve.Endpoint) bool { return ep.Addr == want }) {
					break wait
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("the watcher did not see %v", want)
			}
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	b.ReportMetric(msOf(took[len(took)/2]), "p50-ms")
	b.ReportMetric(msOf(took[(len(took)*99)/100]), "p99-ms")
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
