package resolve_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

func TestCacheWatchPushUpdatesEntry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := resolve.NewMemory()
		defer m.Close()
		a := mustRegister(t, m, "web", ep("10.0.0.1:443"))
		c := newCache(t, m, resolve.CacheConfig{TTL: time.Second})
		_, err := c.Resolve(ctx, "web")
		require.NoError(t, err)
		synctest.Wait()
		require.Equal(t, 1, c.Stats().Watches)

		b := mustRegister(t, m, "web", ep("10.0.0.2:443"))
		synctest.Wait()
		got, err := c.Resolve(ctx, "web")
		require.NoError(t, err)
		require.Equal(t, []resolve.Endpoint{ep("10.0.0.1:443"), ep("10.0.0.2:443")}, got)

		// A watched entry does not expire: the watch keeps it exact.
		time.Sleep(time.Hour)
		_, err = c.Resolve(ctx, "web")
		require.NoError(t, err)

		// An empty push turns the entry negative.
		require.NoError(t, a.Close())
		require.NoError(t, b.Close())
		synctest.Wait()
		_, err = c.Resolve(ctx, "web")
		require.ErrorIs(t, err, resolve.ErrNotFound)

		// And a registration brings it back.
		defer mustRegister(t, m, "web", ep("10.0.0.3:443")).Close()
		synctest.Wait()
		got, err = c.Resolve(ctx, "web")
		require.NoError(t, err)
		require.Equal(t, []resolve.Endpoint{ep("10.0.0.3:443")}, got)

		st := c.Stats()
		require.EqualValues(t, 1, st.Lookups, "every change came by the watch")
		require.GreaterOrEqual(t, st.Updates, uint64(4))
	})
}

func TestCacheWatchEmptyPushWithoutNegativeCaching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		w := &watchCounting{Memory: resolve.NewMemory()}
		defer w.Close()
		reg := mustRegister(t, w, "web", ep("10.0.0.1:443"))
		c := newCache(t, w, resolve.CacheConfig{NegativeTTL: -1})
		_, err := c.Resolve(ctx, "web")
		require.NoError(t, err)
		synctest.Wait()
		require.EqualValues(t, 1, w.active.Load())

		require.NoError(t, reg.Close())
		synctest.Wait()
		require.Zero(t, c.Stats().Entries, "not-found is not cached, even when pushed")
		require.Zero(t, w.active.Load())
	})
}

func TestCacheEvictionStopsWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		w := &watchCounting{Memory: resolve.NewMemory()}
		defer w.Close()
		defer mustRegister(t, w, "a", ep("10.0.0.1:443")).Close()
		defer mustRegister(t, w, "b", ep("10.0.0.2:443")).Close()
		c := newCache(t, w, resolve.CacheConfig{Size: 1})

		_, err := c.Resolve(ctx, "a")
		require.NoError(t, err)
		synctest.Wait()
		require.EqualValues(t, 1, w.active.Load())

		_, err = c.Resolve(ctx, "b") // evicts "a"
		require.NoError(t, err)
		synctest.Wait()
		require.EqualValues(t, 1, w.active.Load(), "the evicted entry's watch ended")
		st := c.Stats()
		require.Equal(t, 1, st.Watches)
		require.EqualValues(t, 1, st.Evictions)

		c.Invalidate("b")
		synctest.Wait()
		require.Zero(t, w.active.Load(), "Invalidate ends the watch")

		_, err = c.Resolve(ctx, "a")
		require.NoError(t, err)
		synctest.Wait()
		require.NoError(t, c.Close())
		synctest.Wait()
		require.Zero(t, w.active.Load(), "Close ends every watch")
	})
}

// If the backend ends a watch on its own, the entry falls back to expiry,
// and the next miss asks the backend again.
func TestCacheBackendEndsWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := resolve.NewMemory()
		mustRegister(t, m, "web", ep("10.0.0.1:443"))
		c := newCache(t, m, resolve.CacheConfig{TTL: time.Second})
		_, err := c.Resolve(ctx, "web")
		require.NoError(t, err)
		synctest.Wait()

		require.NoError(t, m.Close()) // ends the backend's watches
		synctest.Wait()
		require.Zero(t, c.Stats().Watches)
		_, err = c.Resolve(ctx, "web")
		require.NoError(t, err, "still served until it expires")

		time.Sleep(time.Second)
		_, err = c.Resolve(ctx, "web")
		require.ErrorIs(t, err, resolve.ErrClosed, "expired: asked the (closed) backend")
		require.EqualValues(t, 2, c.Stats().Lookups)
	})
}
