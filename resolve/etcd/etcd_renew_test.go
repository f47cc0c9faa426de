package etcd_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/roamnet/roam/resolve/etcd"
	"github.com/roamnet/roam/resolve/etcd/internal/etcdtest"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// lossyKV commits a transaction and then, once armed, reports a timeout:
// what a slow or just-restarted member does when its answer outlasts the
// caller's deadline.
type lossyKV struct {
	clientv3.KV
	armed atomic.Bool
}

func (k *lossyKV) Txn(ctx context.Context) clientv3.Txn { return &lossyTxn{k.KV.Txn(ctx), k} }

type lossyTxn struct {
	clientv3.Txn
	k *lossyKV
}

func (t *lossyTxn) If(c ...clientv3.Cmp) clientv3.Txn  { return &lossyTxn{t.Txn.If(c...), t.k} }
func (t *lossyTxn) Then(o ...clientv3.Op) clientv3.Txn { return &lossyTxn{t.Txn.Then(o...), t.k} }
func (t *lossyTxn) Else(o ...clientv3.Op) clientv3.Txn { return &lossyTxn{t.Txn.Else(o...), t.k} }
func (t *lossyTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if err == nil && resp.Succeeded && t.k.armed.CompareAndSwap(true, false) {
		return nil, context.DeadlineExceeded
	}
	return resp, err
}

// TestEtcdRenewAfterLostAnswer loses a registration's lease, then loses
// the answer to the put that registers it again, although etcd applied it.
// The retry finds the record it wrote itself, on its own lease: that is
// success, not a newer registration, and the lease must be kept alive.
func TestEtcdRenewAfterLostAnswer(t *testing.T) {
	eps := etcdtest.Endpoints(t)
	prefix := etcdtest.Prefix(t)
	cli := rawEtcd(t, eps)
	kv := &lossyKV{KV: cli.KV}
	cli.KV = kv
	var log resolvetest.LogBuffer
	const ttl = 2 * time.Second
	provider := newEtcd(t, nil, etcd.Config{Client: cli, Prefix: prefix, LeaseTTL: ttl, DialTimeout: time.Second, Logger: log.Logger()})
	observer := newEtcd(t, eps, etcd.Config{Prefix: prefix})
	const svc = "lossy.demo"
	_, want := etcdRegisterAt(t, provider, svc, "127.0.0.1:4000")
	etcdWaitResolve(t, observer, svc, want)
	// Past the keep-alive loop's guard against spinning, so that the
	// renewal starts at once.
	time.Sleep(1500 * time.Millisecond)

	// Lose the lease, as when etcd expires it during an outage.
	raw := rawEtcd(t, eps)
	leases, err := raw.Leases(etcdCtx(t))
	require.NoError(t, err)
	kv.armed.Store(true)
	revoked := 0
	for _, l := range leases.Leases {
		attached, err := raw.TimeToLive(etcdCtx(t), l.ID, clientv3.WithAttachedKeys())
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			continue // another test's, expired since the listing (CI shares its cluster)
		}
		require.NoError(t, err)
		for _, k := range attached.Keys {
			if strings.HasPrefix(string(k), prefix) {
				_, err := raw.Revoke(etcdCtx(t), l.ID)
				require.NoError(t, err)
				revoked++
				break
			}
		}
	}
	require.Equal(t, 1, revoked, "the registration's lease")
	require.Eventually(t, func() bool { return !kv.armed.Load() }, etcdBound, 10*time.Millisecond,
		"the put whose answer is lost")
	require.Eventually(t, func() bool { return log.Has("registered again") }, etcdBound, 10*time.Millisecond, "log: %s", &log)
	require.False(t, log.Has("not renewed"), "renew took its own write for a newer registration")
	// Past two TTLs: the new lease is kept alive.
	stillThere(t, observer, svc, want, 2*ttl)
}
