package resolve

import (
	"context"
	"slices"
	"strings"
)

// Watch passes the watch through to the backend, so that a Cache can stand
// wherever its backend did. If the backend is not a Watcher, the error
// wraps ErrUnsupported.
func (c *Cache) Watch(ctx context.Context, service string) (<-chan []Endpoint, error) {
	if c.watcher == nil {
		return nil, &Error{Op: "watch", Service: strings.ToLower(service), Err: ErrUnsupported}
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, &Error{Op: "watch", Service: strings.ToLower(service), Err: ErrClosed}
	}
	return c.watcher.Watch(ctx, service)
}

// onEvict runs whenever an entry leaves the LRU, by eviction, Invalidate or
// Close; all of these hold c.mu. It ends the entry's watch, which is what
// bounds the watches to one per cached service.
func (c *Cache) onEvict(_ string, e *entry) {
	if e.stop != nil {
		e.stop()
		e.stop = nil
	}
}

// startWatch follows key in the backend for as long as e stays cached.
// c.mu must be held.
func (c *Cache) startWatch(key string, e *entry) {
	ctx, cancel := context.WithCancel(c.ctx)
	e.stop = cancel
	c.watches.Add(1)
	c.wg.Add(1)
	go c.watch(ctx, cancel, key, e)
}

func (c *Cache) watch(ctx context.Context, cancel context.CancelFunc, key string, e *entry) {
	defer c.wg.Done()
	defer c.watches.Add(-1)
	// The backend call happens here rather than in startWatch so that a
	// slow backend (a network round trip) never runs under c.mu.
	if ch, err := c.watcher.Watch(ctx, key); err == nil {
		c.follow(ctx, key, e, ch)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if ctx.Err() != nil {
		return // evicted, invalidated or closed: the entry is gone
	}
	// The backend refused or ended the watch. Nothing keeps the answer
	// fresh any more, so let it expire as an unwatched one would; the miss
	// that follows will watch again. Retries are thus paced by the TTL.
	cancel()
	e.stop = nil
	if a := e.ans.Load(); a.expires.IsZero() {
		e.ans.Store(&answer{eps: a.eps, err: a.err, expires: c.now().Add(c.lifetime(a.eps))})
	}
}

// follow applies each pushed set to e until the watch ends.
func (c *Cache) follow(ctx context.Context, key string, e *entry, ch <-chan []Endpoint) {
	for {
		var eps []Endpoint
		var ok bool
		select {
		case <-ctx.Done():
			return
		case eps, ok = <-ch:
			if !ok {
				return
			}
		}
		c.updates.Add(1)
		switch {
		case len(eps) > 0:
			e.ans.Store(&answer{eps: slices.Clone(eps)})
		case c.negTTL > 0:
			e.ans.Store(&answer{err: &Error{Op: "resolve", Service: key, Err: ErrNotFound}})
		default:
			// Negative caching is off: forget the service, and so end
			// this watch (onEvict cancels ctx).
			c.mu.Lock()
			if cur, ok := c.lru.Peek(key); ok && cur == e {
				c.lru.Remove(key)
			}
			c.mu.Unlock()
			return
		}
	}
}
