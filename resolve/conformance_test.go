package resolve_test

import (
	"context"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/resolvetest"
)

func TestConformance(t *testing.T) {
	newMemory := func(t *testing.T) *resolve.Memory {
		m := resolve.NewMemory()
		t.Cleanup(func() { _ = m.Close() })
		return m
	}
	newCache := func(t *testing.T, r resolve.Resolver, cfg resolve.CacheConfig) resolve.Resolver {
		c := resolve.NewCache(r, cfg)
		t.Cleanup(func() { _ = c.Close() }) // runs before the backend's Close
		return c
	}

	t.Run("Memory", func(t *testing.T) {
		resolvetest.Run(t, func(t *testing.T) resolve.Resolver { return newMemory(t) })
	})
	// Over a Watcher, the Cache must see changes by its watches.
	t.Run("CacheOverMemory", func(t *testing.T) {
		resolvetest.Run(t, func(t *testing.T) resolve.Resolver {
			return newCache(t, newMemory(t), resolve.CacheConfig{})
		})
	})
	// Over a plain Resolver, only expiry brings changes: short TTLs make the
	// suite's waits short.
	t.Run("CacheOverResolver", func(t *testing.T) {
		resolvetest.Run(t, func(t *testing.T) resolve.Resolver {
			return newCache(t, resolveOnly{newMemory(t)}, resolve.CacheConfig{
				TTL:         5 * time.Millisecond,
				NegativeTTL: 5 * time.Millisecond,
			})
		})
	})
	t.Run("Static", func(t *testing.T) {
		resolvetest.Run(t, func(t *testing.T) resolve.Resolver { return resolve.NewStatic(nil) })
	})
}

// resolveOnly hides every ability of a backend but Resolve, and offers the
// backend by Unwrap as wrappers do.
type resolveOnly struct{ r resolve.Resolver }

func (o resolveOnly) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	return o.r.Resolve(ctx, service)
}

func (o resolveOnly) Unwrap() resolve.Resolver { return o.r }
