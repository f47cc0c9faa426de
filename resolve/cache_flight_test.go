package resolve_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

// These tests run in a synctest bubble: synctest.Wait returns once every
// goroutine is blocked, so "all callers are waiting on the lookup" is a fact
// rather than a sleep, and timeouts cost no wall time.

type result struct {
	eps []resolve.Endpoint
	err error
}

func resolveAsync(ctx context.Context, c *resolve.Cache, service string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		eps, err := c.Resolve(ctx, service)
		ch <- result{eps, err}
	}()
	return ch
}

func TestCacheCollapsesConcurrentMisses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocking(ep("10.0.0.1:443"))
		c := newCache(t, b, resolve.CacheConfig{})
		const n = 20
		var results []<-chan result
		for i := range n {
			service := "web"
			if i%2 == 1 {
				service = "WEB" // one service, however spelled
			}
			results = append(results, resolveAsync(context.Background(), c, service))
		}
		synctest.Wait()
		require.EqualValues(t, 1, b.calls.Load(), "one backend lookup for all callers")

		close(b.release)
		for _, ch := range results {
			r := <-ch
			require.NoError(t, r.err)
			require.Equal(t, []resolve.Endpoint{ep("10.0.0.1:443")}, r.eps)
		}
		st := c.Stats()
		require.EqualValues(t, n, st.Misses)
		require.EqualValues(t, n-1, st.Collapsed)
		require.EqualValues(t, 1, st.Lookups)

		_, err := c.Resolve(context.Background(), "web")
		require.NoError(t, err)
		require.EqualValues(t, 1, b.calls.Load(), "the shared answer was cached")
	})
}

func TestCacheWaiterLeavesEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocking(ep("10.0.0.1:443"))
		c := newCache(t, b, resolve.CacheConfig{})
		cause := errors.New("caller gave up")
		ctx, cancel := context.WithCancelCause(context.Background())
		impatient := resolveAsync(ctx, c, "web")
		patient := resolveAsync(context.Background(), c, "web")
		synctest.Wait()

		cancel(cause)
		synctest.Wait()
		select {
		case r := <-impatient:
			require.ErrorIs(t, r.err, cause)
			var e *resolve.Error
			require.ErrorAs(t, r.err, &e)
		default:
			t.Fatal("a caller whose context ended is still waiting")
		}
		require.Empty(t, patient, "the other caller still waits")
		require.Zero(t, b.canceled.Load(), "the shared lookup goes on")

		close(b.release)
		r := <-patient
		require.NoError(t, r.err)
		require.Len(t, r.eps, 1)
		require.EqualValues(t, 1, b.calls.Load())
	})
}

func TestCacheLastWaiterCancelsLookup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocking(ep("10.0.0.1:443"))
		c := newCache(t, b, resolve.CacheConfig{})
		ctx, cancel := context.WithCancel(context.Background())
		a := resolveAsync(ctx, c, "web")
		bb := resolveAsync(ctx, c, "web")
		synctest.Wait()
		cancel()
		synctest.Wait()
		require.ErrorIs(t, (<-a).err, context.Canceled)
		require.ErrorIs(t, (<-bb).err, context.Canceled)
		require.EqualValues(t, 1, b.canceled.Load(), "no caller left: the lookup is cancelled")

		// The abandoned lookup must not be joined or cached: a new caller
		// starts afresh.
		again := resolveAsync(context.Background(), c, "web")
		synctest.Wait()
		require.EqualValues(t, 2, b.calls.Load())
		close(b.release)
		require.NoError(t, (<-again).err)
	})
}

// The caller's deadline does not govern the shared lookup: LookupTimeout
// does, and a timeout is not cached.
func TestCacheLookupTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocking() // never released
		c := newCache(t, b, resolve.CacheConfig{LookupTimeout: 3 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		start := time.Now()
		_, err := c.Resolve(ctx, "web")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, 3*time.Second, time.Since(start))

		_, err = c.Resolve(ctx, "web")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.EqualValues(t, 2, b.calls.Load(), "timeouts are not cached")
	})
}

func TestCacheCanceledBeforeMiss(t *testing.T) {
	b := newBlocking()
	c := newCache(t, b, resolve.CacheConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Resolve(ctx, "web")
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, b.calls.Load(), "no lookup for a caller that is already gone")
}

func TestCacheCloseDuringLookup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlocking() // never released: Close must cancel it
		c := resolve.NewCache(b, resolve.CacheConfig{})
		waiting := resolveAsync(context.Background(), c, "web")
		synctest.Wait()
		require.NoError(t, c.Close())
		require.ErrorIs(t, (<-waiting).err, resolve.ErrClosed)
		require.EqualValues(t, 1, b.canceled.Load())
	})
}

// Concurrent hits, misses, invalidations and pushes: for -race.
func TestCacheConcurrent(t *testing.T) {
	m := newMemory(t)
	c := newCache(t, m, resolve.CacheConfig{Size: 4})
	services := []string{"a", "b", "c", "d", "e", "f"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				svc := services[(g+i)%len(services)]
				switch i % 7 {
				case 0:
					c.Invalidate(svc)
				case 1:
					r, err := m.Register(context.Background(), svc, ep("10.0.0.1:443"))
					if err == nil {
						_ = r.Close()
					}
				default:
					if _, err := c.Resolve(context.Background(), svc); err != nil && !errors.Is(err, resolve.ErrNotFound) {
						t.Errorf("Resolve(%q): %v", svc, err)
					}
				}
			}
		})
	}
	wg.Wait()
	// Evicted entries' watches end asynchronously.
	require.Eventually(t, func() bool { return c.Stats().Watches <= 4 }, 5*time.Second, time.Millisecond,
		"one watch per cached entry at most")
}
