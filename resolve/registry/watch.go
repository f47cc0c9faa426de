package registry

import (
	"context"
	"sync"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/regwire"
)

// A watch at the registry costs a few small records and no goroutine: the
// view (a resolve.Memory, or a resolve.Health over it) calls a function with
// each new set, under its lock, and that function only notes the set for the
// stream's watchPusher, which writes it. 40,960 watches once left 41k
// goroutines behind for a minute after their clients left; now a stream's
// watches end with it, one after another from its own goroutine, and leave
// nothing running (ending each through a context.AfterFunc would start one
// goroutine per watch: thousands at once, whose records the runtime keeps
// for good).

func (c *registryConn) watch(ctx context.Context, f *regwire.Frame, pushes *watchPusher) *regwire.Frame {
	r := c.r
	c.mu.Lock()
	if _, dup := c.watches[f.ID]; dup {
		c.mu.Unlock()
		return errorFrame(f.ID, regwire.CodeInvalid, "watch ID in use")
	}
	if len(c.watches) >= r.cfg.MaxWatchesPerConn {
		c.mu.Unlock()
		return r.refuse(f.ID, &resolve.LimitError{Limit: resolve.LimitWatchesPerConn, Max: r.cfg.MaxWatchesPerConn})
	}
	if r.watches.Add(1) > int64(r.cfg.MaxWatches) {
		r.watches.Add(-1)
		c.mu.Unlock()
		return r.refuse(f.ID, &resolve.LimitError{Limit: resolve.LimitWatches, Max: r.cfg.MaxWatches})
	}
	c.watches[f.ID] = nil // taken; its stop follows
	c.mu.Unlock()
	ended := func() {
		c.mu.Lock()
		delete(c.watches, f.ID)
		c.mu.Unlock()
		pushes.forget(f.ID)
		r.watches.Add(-1)
	}
	pushes.start()
	// The view calls this under its lock: it only notes what to send.
	stop, err := r.view.WatchFunc(ctx, f.Service, func(eps []resolve.Endpoint, ok bool) {
		if !ok {
			ended()
		}
		pushes.push(f.ID, eps, ok)
	})
	if err != nil {
		ended() // the view calls nothing when it refuses
		return errorAnswer(f.ID, err)
	}
	c.mu.Lock()
	if _, live := c.watches[f.ID]; live {
		c.watches[f.ID] = stop
		pushes.own(f.ID)
	}
	c.mu.Unlock()
	return nil
}

// unwatch ends the watch id, if it is open. The caller holds no lock.
func (c *registryConn) unwatch(id uint64) {
	c.mu.Lock()
	stop := c.watches[id]
	c.mu.Unlock()
	if stop != nil {
		stop() // the watch's end, in the view, sends the closing OK
	}
}

// watchPusher writes the sets of one stream's watches, from one goroutine
// that runs from the stream's first watch to its end. A watch whose set
// changes again before it was written sends only the newest.
type watchPusher struct {
	c   *registryConn
	ctx context.Context // the stream's
	w   *regwire.Writer

	mu      sync.Mutex
	running bool
	order   []uint64 // watch IDs with something to send, first come first
	pending map[uint64]watchPush
	wake    chan struct{}
	owned   map[uint64]struct{} // the watches opened on this stream
}

type watchPush struct {
	eps   []resolve.Endpoint
	ended bool // the watch ended: send OK, unless the stream did
}

// start runs the pusher if it is not running yet. The caller is the
// stream's goroutine, which the connection's count in Server.wg covers,
// so adding to it cannot race with Close's Wait.
func (p *watchPusher) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		return
	}
	p.running = true
	p.pending = make(map[uint64]watchPush)
	p.wake = make(chan struct{}, 1)
	p.c.r.wg.Go(p.run)
}

func (p *watchPusher) own(id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.owned == nil {
		p.owned = make(map[uint64]struct{})
	}
	p.owned[id] = struct{}{}
}

func (p *watchPusher) forget(id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.owned, id)
}

// endAll ends the stream's watches, when it has ended.
func (p *watchPusher) endAll() {
	p.mu.Lock()
	ids := make([]uint64, 0, len(p.owned))
	for id := range p.owned {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	for _, id := range ids {
		p.c.unwatch(id)
	}
}

// push notes a watch's newest set, or its end (ok false). It runs under
// the view's lock, and does not block.
func (p *watchPusher) push(id uint64, eps []resolve.Endpoint, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, queued := p.pending[id]
	if queued && prev.ended {
		return
	}
	p.pending[id] = watchPush{eps: eps, ended: !ok}
	if !queued {
		p.order = append(p.order, id)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *watchPusher) run() {
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
		}
		p.mu.Lock()
		order, pending := p.order, p.pending
		p.order, p.pending = nil, make(map[uint64]watchPush, len(pending))
		p.mu.Unlock()
		var err error
		for _, id := range order {
			if pp := pending[id]; pp.ended {
				err = p.w.Queue(&regwire.Frame{Type: regwire.TypeOK, ID: id})
			} else {
				err = p.w.Queue(endpointsFrame(id, pp.eps))
			}
			if err != nil {
				break
			}
		}
		if err == nil {
			err = p.w.Flush()
		}
		if err != nil {
			p.c.qc.CloseWithError(codeRegistryProto, "client does not read")
			return
		}
	}
}
