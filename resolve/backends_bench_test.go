package resolve_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/dnstest"
	"github.com/roamnet/roam/sal"
)

// benchBackend is one backend under BenchmarkBackends, serving one service
// whose provider is a sal Host.
type benchBackend struct {
	name string
	// open returns a fresh client of the backend (one per Host, as two
	// processes would have).
	open func(b *testing.B) resolve.Resolver
	// uncached returns a resolver that asks the backend at every call.
	uncached func(b *testing.B) resolve.Resolver
	// published is called after the provider Rebinds, for backends (DNS)
	// where an operator, not the Host, publishes addresses.
	published func(h *sal.Host)
}

// BenchmarkBackends compares the backends in one run: Resolve latency
// with and without the Cache, lookups per second from many goroutines,
// and watch propagation, the time from a provider's Rebind to a
// watcher's update.
func BenchmarkBackends(b *testing.B) {
	for _, bb := range benchBackends(b) {
		b.Run(bb.name, func(b *testing.B) {
			ctx := context.Background()
			provider := benchHost(b, bb.open(b))
			ln, err := provider.Listen(ctx, "bench.demo")
			require.NoError(b, err)
			b.Cleanup(func() { ln.Close() })
			if bb.published != nil {
				bb.published(provider)
			}
			direct := bb.uncached(b)
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
				c := resolve.NewCache(bb.open(b), resolve.CacheConfig{})
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
func benchWatchPropagation(b *testing.B, bb benchBackend, provider *sal.Host) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, ok := bb.open(b).(resolve.Watcher)
	if !ok {
		b.Skip("no watch")
	}
	ch, err := w.Watch(ctx, "bench.demo")
	require.NoError(b, err)
	var took []time.Duration
	for b.Loop() {
		start := time.Now()
		require.NoError(b, provider.Rebind(ctx, "127.0.0.1:0"))
		if bb.published != nil {
			bb.published(provider)
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
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[(len(took)*99)/100]), "p99-ms")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func benchBackends(b *testing.B) []benchBackend {
	reg := startRegistry(b, resolve.RegistryConfig{})
	openRegistry := func(b *testing.B) resolve.Resolver {
		r, err := resolve.Open(context.Background(), reg.URL())
		require.NoError(b, err)
		b.Cleanup(func() { r.(*resolve.RegistryClient).Close() })
		return r
	}

	// DNS answers carry a 1 s TTL (NewDNS's floor), so its watch polls
	// once a second: its propagation is bounded by that, by design.
	dns := dnstest.NewServer(b)
	publish := func(h *sal.Host) {
		ap := h.LocalAddr()
		dns.SetSRV(srvName("bench.demo"), time.Second, dnstest.SRV{Port: ap.Port(), Target: "h.bench.demo"})
		dns.SetAddrs("h.bench.demo", time.Second, ap.Addr())
	}
	openDNS := func(cfg resolve.DNSConfig) *resolve.DNS {
		cfg.Servers = []string{dns.Addr()}
		d, err := resolve.NewDNS(cfg)
		require.NoError(b, err)
		b.Cleanup(func() { d.Close() })
		return d
	}
	backends := []benchBackend{
		{name: "registry", open: openRegistry, uncached: openRegistry},
		{
			name: "dns",
			open: func(*testing.B) resolve.Resolver { return openDNS(resolve.DNSConfig{}) },
			// A DNS keeps answers for their TTL; uncached, every call finds
			// its answer expired and asks the server.
			uncached: func(*testing.B) resolve.Resolver {
				clock := newFakeClock()
				return expiring{openDNS(resolve.DNSConfig{Now: clock.Now}), clock}
			},
			published: publish,
		},
	}
	return append(backends, etcdBenchBackends(b)...)
}

// expiring moves a DNS's clock past every answer's TTL before each lookup.
type expiring struct {
	d     *resolve.DNS
	clock *fakeClock
}

func (e expiring) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	e.clock.Advance(time.Hour)
	return e.d.Resolve(ctx, service)
}
