package resolve_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/resolvetest"
)

func newCache(t *testing.T, r resolve.Resolver, cfg resolve.CacheConfig) *resolve.Cache {
	c := resolve.NewCache(r, cfg)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestCacheLifetime(t *testing.T) {
	tests := []struct {
		name   string
		ttls   []time.Duration // one endpoint per TTL
		cfgTTL time.Duration
		want   time.Duration
	}{
		{"default TTL", []time.Duration{0}, 0, 30 * time.Second},
		{"configured TTL", []time.Duration{0}, 10 * time.Second, 10 * time.Second},
		{"endpoint TTL beats default", []time.Duration{5 * time.Second}, 0, 5 * time.Second},
		{"endpoint TTL may exceed default", []time.Duration{time.Minute}, 0, time.Minute},
		{"shortest endpoint wins", []time.Duration{20 * time.Second, 5 * time.Second}, 0, 5 * time.Second},
		{"zero TTL counts as configured", []time.Duration{20 * time.Second, 0}, 10 * time.Second, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			m := newMemory(t)
			for i, ttl := range tt.ttls {
				e := resolve.Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 443), TTL: ttl}
				defer mustRegister(t, m, "web", e).Close()
			}
			b := &counting{r: m}
			clock := resolvetest.NewClock()
			c := newCache(t, b, resolve.CacheConfig{TTL: tt.cfgTTL, Now: clock.Now})

			got, err := c.Resolve(ctx, "web")
			require.NoError(t, err)
			require.Len(t, got, len(tt.ttls))
			clock.Advance(tt.want - 1)
			_, err = c.Resolve(ctx, "WEB")
			require.NoError(t, err)
			require.EqualValues(t, 1, b.calls.Load(), "fresh until the shortest TTL")
			clock.Advance(1)
			_, err = c.Resolve(ctx, "web")
			require.NoError(t, err)
			require.EqualValues(t, 2, b.calls.Load(), "expired at the shortest TTL")
		})
	}
}

func TestCacheNegative(t *testing.T) {
	tests := []struct {
		name        string
		negativeTTL time.Duration
		want        time.Duration // 0: not cached
	}{
		{"default", 0, 2 * time.Second},
		{"configured", 500 * time.Millisecond, 500 * time.Millisecond},
		{"disabled", -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			b := &counting{r: newMemory(t)}
			clock := resolvetest.NewClock()
			c := newCache(t, b, resolve.CacheConfig{NegativeTTL: tt.negativeTTL, Now: clock.Now})

			for range 2 {
				_, err := c.Resolve(ctx, "absent")
				require.ErrorIs(t, err, resolve.ErrNotFound)
				var e *resolve.Error
				require.ErrorAs(t, err, &e)
				require.Equal(t, "absent", e.Service)
			}
			if tt.want == 0 {
				require.EqualValues(t, 2, b.calls.Load())
				require.Zero(t, c.Stats().Entries)
				return
			}
			require.EqualValues(t, 1, b.calls.Load())
			clock.Advance(tt.want)
			_, err := c.Resolve(ctx, "absent")
			require.ErrorIs(t, err, resolve.ErrNotFound)
			require.EqualValues(t, 2, b.calls.Load())
		})
	}
}

func TestCacheDoesNotCacheOtherErrors(t *testing.T) {
	boom := errors.New("backend unreachable")
	tests := []struct {
		name string
		err  error
	}{
		{"plain", boom},
		{"timeout", context.DeadlineExceeded},
		{"already an *Error", &resolve.Error{Op: "resolve", Service: "web", Err: boom}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			b := resolverFunc(func(context.Context, string) ([]resolve.Endpoint, error) {
				calls++
				return nil, tt.err
			})
			c := newCache(t, b, resolve.CacheConfig{})
			for range 2 {
				_, err := c.Resolve(context.Background(), "Web")
				require.ErrorIs(t, err, tt.err)
				var e *resolve.Error
				require.ErrorAs(t, err, &e)
				require.Equal(t, "web", e.Service)
			}
			require.Equal(t, 2, calls)
		})
	}
}

// A backend that answers an empty set without an error is treated as
// having said "not found".
func TestCacheEmptyAnswerIsNotFound(t *testing.T) {
	b := resolverFunc(func(context.Context, string) ([]resolve.Endpoint, error) { return nil, nil })
	c := newCache(t, b, resolve.CacheConfig{})
	_, err := c.Resolve(context.Background(), "web")
	require.ErrorIs(t, err, resolve.ErrNotFound)
}

// The cache must own what it hands out: a backend that reuses its buffer
// must not change cached answers.
func TestCacheCopiesBackendAnswer(t *testing.T) {
	buf := []resolve.Endpoint{ep("10.0.0.1:443")}
	b := resolverFunc(func(context.Context, string) ([]resolve.Endpoint, error) { return buf, nil })
	c := newCache(t, b, resolve.CacheConfig{})
	_, err := c.Resolve(context.Background(), "web")
	require.NoError(t, err)
	buf[0] = ep("10.6.6.6:1")
	got, err := c.Resolve(context.Background(), "web")
	require.NoError(t, err)
	require.Equal(t, []resolve.Endpoint{ep("10.0.0.1:443")}, got)
}

func TestCacheInvalidate(t *testing.T) {
	ctx := context.Background()
	m := newMemory(t)
	defer mustRegister(t, m, "web", ep("10.0.0.1:443")).Close()
	b := &counting{r: m}
	c := newCache(t, b, resolve.CacheConfig{})

	_, err := c.Resolve(ctx, "web")
	require.NoError(t, err)
	c.Invalidate("WEB")
	require.Zero(t, c.Stats().Entries)
	_, err = c.Resolve(ctx, "web")
	require.NoError(t, err)
	require.EqualValues(t, 2, b.calls.Load())
	c.Invalidate("never-cached") // harmless
}

func TestCacheStats(t *testing.T) {
	ctx := context.Background()
	m := newMemory(t)
	defer mustRegister(t, m, "web", ep("10.0.0.1:443")).Close()
	c := newCache(t, &counting{r: m}, resolve.CacheConfig{})
	for range 3 {
		_, err := c.Resolve(ctx, "web")
		require.NoError(t, err)
	}
	_, err := c.Resolve(ctx, "absent")
	require.ErrorIs(t, err, resolve.ErrNotFound)
	_, err = c.Resolve(ctx, "absent")
	require.ErrorIs(t, err, resolve.ErrNotFound)
	require.Equal(t, resolve.CacheStats{Hits: 3, Misses: 2, Lookups: 2, Entries: 2}, c.Stats())
}

func TestCacheEviction(t *testing.T) {
	ctx := context.Background()
	m := newMemory(t)
	for _, svc := range []string{"a", "b", "c"} {
		defer mustRegister(t, m, svc, ep("10.0.0.1:443")).Close()
	}
	b := &counting{r: m}
	c := newCache(t, b, resolve.CacheConfig{Size: 2})
	for _, svc := range []string{"a", "b", "a", "c", "a", "b"} {
		_, err := c.Resolve(ctx, svc)
		require.NoError(t, err)
	}
	// "a" stays as the most recently used; "b" was evicted by "c".
	require.EqualValues(t, 4, b.calls.Load())
	st := c.Stats()
	require.EqualValues(t, 2, st.Evictions)
	require.Equal(t, 2, st.Entries)
}

func TestCacheWatchPassThrough(t *testing.T) {
	static := resolve.NewStatic(nil)
	c := newCache(t, static, resolve.CacheConfig{})
	require.Same(t, static.(*resolve.Static), c.Unwrap().(*resolve.Static))
	_, err := c.Watch(context.Background(), "Web")
	require.ErrorIs(t, err, resolve.ErrUnsupported)
	var e *resolve.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "watch", e.Op)
	require.Equal(t, "web", e.Service)

	m := newMemory(t)
	c = newCache(t, m, resolve.CacheConfig{})
	_, ok := c.Unwrap().(resolve.Registrar)
	require.True(t, ok, "the Registrar is found on Unwrap")
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := c.Watch(ctx, "web")
	require.NoError(t, err)
	require.Empty(t, <-ch)
	cancel()
	for range ch {
	}
}

func TestCacheClose(t *testing.T) {
	ctx := context.Background()
	m := newMemory(t)
	defer mustRegister(t, m, "web", ep("10.0.0.1:443")).Close()
	c := resolve.NewCache(m, resolve.CacheConfig{})
	_, err := c.Resolve(ctx, "web")
	require.NoError(t, err)

	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
	require.Zero(t, c.Stats().Watches)
	_, err = c.Resolve(ctx, "web")
	require.ErrorIs(t, err, resolve.ErrClosed)
	_, err = c.Watch(ctx, "web")
	require.ErrorIs(t, err, resolve.ErrClosed)
	_, err = m.Resolve(ctx, "web")
	require.NoError(t, err, "closing the cache leaves the backend open")
}
