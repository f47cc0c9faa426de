package resolve_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

// hitCache returns a Cache holding "web" and a Memory behind it: a watched
// entry, as in production with a Watcher backend.
func hitCache(tb testing.TB) *resolve.Cache {
	m := resolve.NewMemory()
	tb.Cleanup(func() { _ = m.Close() })
	_, err := m.Register(context.Background(), "web", ep("10.0.0.1:443"))
	require.NoError(tb, err)
	c := resolve.NewCache(m, resolve.CacheConfig{})
	tb.Cleanup(func() { _ = c.Close() })
	_, err = c.Resolve(context.Background(), "web")
	require.NoError(tb, err)
	return c
}

// A hit is on the path of every dial: it must not allocate.
func TestCacheHitDoesNotAllocate(t *testing.T) {
	for _, tt := range []struct {
		name string
		c    *resolve.Cache
	}{
		{"watched", hitCache(t)},
		{"expiring", func() *resolve.Cache {
			c := resolve.NewCache(resolve.NewStatic(nil), resolve.CacheConfig{})
			t.Cleanup(func() { _ = c.Close() })
			_, _ = c.Resolve(context.Background(), "web") // a negative entry, with an expiry to check
			return c
		}()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			allocs := testing.AllocsPerRun(1000, func() { _, _ = tt.c.Resolve(ctx, "web") })
			require.Zero(t, allocs)
		})
	}
}

// BenchmarkCacheHit measures a hit on an entry kept by a watch (no clock
// read) and on one that expires (one clock read).
func BenchmarkCacheHit(b *testing.B) {
	ctx := context.Background()
	b.Run("watched", func(b *testing.B) {
		c := hitCache(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Resolve(ctx, "web"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("expiring", func(b *testing.B) {
		c := resolve.NewCache(resolve.NewStatic(map[string][]netip.AddrPort{
			"web": {netip.MustParseAddrPort("10.0.0.1:443")},
		}), resolve.CacheConfig{})
		defer c.Close()
		_, err := c.Resolve(ctx, "web")
		require.NoError(b, err)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Resolve(ctx, "web"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCacheHitParallel shows the cost of contention on the LRU's lock
// when every core asks for the same service.
func BenchmarkCacheHitParallel(b *testing.B) {
	c := hitCache(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Resolve(ctx, "web"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCacheMiss is the cost of a lookup through the collapsing path,
// against the fastest possible backend.
func BenchmarkCacheMiss(b *testing.B) {
	m := resolve.NewMemory()
	defer m.Close()
	_, err := m.Register(context.Background(), "web", ep("10.0.0.1:443"))
	require.NoError(b, err)
	c := resolve.NewCache(resolveOnly{m}, resolve.CacheConfig{})
	defer c.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c.Invalidate("web")
		if _, err := c.Resolve(ctx, "web"); err != nil {
			b.Fatal(err)
		}
	}
}
