package resolve_test

import (
	"context"
	"sync/atomic"

	"github.com/roamnet/roam/resolve"
)

// counting is a Resolve-only backend (never a Watcher, so the Cache falls
// back to expiry) that counts its lookups.
type counting struct {
	r     resolve.Resolver
	calls atomic.Int64
}

func (c *counting) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	c.calls.Add(1)
	return c.r.Resolve(ctx, service)
}

// resolverFunc adapts a function to a Resolve-only backend.
type resolverFunc func(ctx context.Context, service string) ([]resolve.Endpoint, error)

func (f resolverFunc) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	return f(ctx, service)
}

// blocking is a backend whose lookups wait until released (each then
// answers eps) or until their context ends. It counts lookups begun and
// lookups that saw their context end.
type blocking struct {
	release  chan struct{}
	eps      []resolve.Endpoint
	calls    atomic.Int64
	canceled atomic.Int64
}

func newBlocking(eps ...resolve.Endpoint) *blocking {
	return &blocking{release: make(chan struct{}), eps: eps}
}

func (b *blocking) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	b.calls.Add(1)
	select {
	case <-b.release:
		return b.eps, nil
	case <-ctx.Done():
		b.canceled.Add(1)
		return nil, context.Cause(ctx)
	}
}

// watchCounting is a Memory that counts the backend watches running, to
// check that the Cache ends those it starts.
type watchCounting struct {
	*resolve.Memory
	active atomic.Int64
}

func (w *watchCounting) Watch(ctx context.Context, service string) (<-chan []resolve.Endpoint, error) {
	ch, err := w.Memory.Watch(ctx, service)
	if err == nil {
		w.active.Add(1)
		context.AfterFunc(ctx, func() { w.active.Add(-1) })
	}
	return ch, err
}
