package etcd

import (
	"context"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/roamnet/roam/resolve"
)

// etcdWatch follows one service for one Watch call.
type etcdWatch struct {
	e      *Backend
	svc    string
	prefix string
	keys   map[string]*mvccpb.KeyValue // the service's keys as last seen
	rev    int64                       // the revision keys reflect
	last   []resolve.Endpoint          // the set last sent
}

// Watch implements Watcher. It lists the service's keys, sends the
// endpoints, and then follows etcd's watch of the service's prefix. If
// etcd ends that watch (its history was compacted past the watch, or the
// member lost its leader), Watch lists the keys again and follows on from
// there, retrying with backoff while etcd is out of reach. A set is sent
// only when it differs from the last one, and a slow reader gets the
// newest. The channel closes when ctx ends or the Backend is closed.
func (e *Backend) Watch(ctx context.Context, service string) (<-chan []resolve.Endpoint, error) {
	svc, err := resolve.ServiceKey("watch", service)
	if err != nil {
		return nil, err
	}
	if err := e.check(ctx, svc); err != nil {
		return nil, &resolve.Error{Op: "watch", Service: svc, Err: err}
	}
	w := &etcdWatch{e: e, svc: svc, prefix: e.svcPrefix(svc)}
	if err := w.list(ctx); err != nil {
		return nil, &resolve.Error{Op: "watch", Service: svc, Err: e.rpcErr(ctx, err)}
	}
	ch := make(chan []resolve.Endpoint, 1)
	w.last = w.endpoints()
	ch <- w.last
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, &resolve.Error{Op: "watch", Service: svc, Err: resolve.ErrClosed}
	}
	e.wg.Add(1)
	go w.run(ctx, ch)
	return ch, nil
}

// list reads the service's keys afresh.
func (w *etcdWatch) list(ctx context.Context) error {
	resp, err := w.e.cli.Get(ctx, w.prefix, append([]clientv3.OpOption{clientv3.WithPrefix()}, w.e.read...)...)
	if err != nil {
		return err
	}
	w.keys = make(map[string]*mvccpb.KeyValue, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		w.keys[string(kv.Key)] = kv
	}
	w.rev = resp.Header.Revision
	return nil
}

func (w *etcdWatch) endpoints() []resolve.Endpoint {
	kvs := make([]*mvccpb.KeyValue, 0, len(w.keys))
	for _, kv := range w.keys {
		kvs = append(kvs, kv)
	}
	return w.e.endpointsOf(w.svc, kvs)
}

// publish sends the current set if it changed. run is the only sender, so
// after taking a stale value out the send cannot block.
func (w *etcdWatch) publish(ch chan []resolve.Endpoint) {
	eps := w.endpoints()
	if slices.Equal(eps, w.last) {
		return
	}
	select {
	case <-ch:
	default:
	}
	ch <- eps
	w.last = eps
}

func (w *etcdWatch) run(ctx context.Context, ch chan []resolve.Endpoint) {
	defer w.e.wg.Done()
	defer close(ch)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(w.e.ctx, cancel)() // Close ends every watch

	var b etcdBackoff
	for {
		if w.follow(ctx, ch) {
			b.reset()
		} else if !b.wait(ctx) { // ended without a word: do not spin
			return
		}
		for {
			if ctx.Err() != nil {
				return
			}
			err := w.list(ctx)
			if err == nil {
				break
			}
			w.e.log.Debug("etcd: listing a watched service", "service", w.svc, "err", err)
			if !b.wait(ctx) {
				return
			}
		}
		w.publish(ch)
	}
}

// follow applies etcd's watch events from w.rev on until the watch ends,
// and reports whether any response came.
func (w *etcdWatch) follow(ctx context.Context, ch chan []resolve.Endpoint) (progressed bool) {
	// Require a leader: a member cut off from the others would otherwise
	// hold the watch open and silent, while the cluster goes on without it.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.e.cli.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(w.rev+1))
	defer func() {
		cancel()
		for range wch { // the client closes it once wctx is done
		}
	}()
	for resp := range wch {
		if resp.CompactRevision != 0 || resp.Err() != nil {
			w.e.log.Debug("etcd: watch ended; listing again", "service", w.svc,
				"compacted", resp.CompactRevision, "err", resp.Err())
			return progressed
		}
		progressed = true
		if resp.IsProgressNotify() {
			w.rev = max(w.rev, resp.Header.Revision)
			continue
		}
		for _, ev := range resp.Events {
			k := string(ev.Kv.Key)
			if ev.Type == clientv3.EventTypeDelete {
				delete(w.keys, k)
			} else {
				w.keys[k] = ev.Kv
			}
			w.rev = max(w.rev, ev.Kv.ModRevision)
		}
		w.publish(ch)
	}
	return progressed
}
