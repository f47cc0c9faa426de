package etcd_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/etcd"
	"github.com/roamnet/roam/resolve/etcd/internal/etcdtest"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// etcdBound is how long a test waits for etcd to do something that takes
// milliseconds when all is well: it only catches hangs.
const etcdBound = 15 * time.Second

// newEtcd returns an Etcd on endpoints (or a cluster of the test's own)
// under a prefix of the test's own, closed when the test ends.
func newEtcd(t testing.TB, endpoints []string, cfg etcd.Config) *etcd.Backend {
	t.Helper()
	if endpoints == nil && cfg.Client == nil {
		endpoints = etcdtest.Endpoints(t)
	}
	cfg.Endpoints = endpoints
	if cfg.Prefix == "" {
		cfg.Prefix = etcdtest.Prefix(t)
	}
	e, err := etcd.New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

// rawEtcd returns a plain etcd client, for writing what no Etcd would.
func rawEtcd(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: etcdBound})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

func etcdSigner(t testing.TB) (crypto.Signer, resolve.Fingerprint) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	fp, err := resolve.FingerprintOf(key.Public())
	require.NoError(t, err)
	return key, fp
}

// etcdRegisterAt registers svc at addr through r under a new key, until
// the test ends, and returns the key and the set a resolver should answer.
func etcdRegisterAt(t testing.TB, r *etcd.Backend, svc, addr string) (crypto.Signer, []resolve.Endpoint) {
	t.Helper()
	key, fp := etcdSigner(t)
	reg, err := r.RegisterSigned(etcdCtx(t), svc, resolve.Endpoint{Addr: netip.MustParseAddrPort(addr)}, key)
	require.NoError(t, err)
	t.Cleanup(func() { reg.Close() })
	return key, []resolve.Endpoint{etcdEP(addr, fp)}
}

func etcdEP(s string, key resolve.Fingerprint) resolve.Endpoint {
	return resolve.Endpoint{Addr: netip.MustParseAddrPort(s), Key: key}
}

func etcdCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), etcdBound)
	t.Cleanup(cancel)
	return ctx
}

// waitResolve waits until service resolves to exactly want (nil: not
// found), in order.
func etcdWaitResolve(t *testing.T, r resolve.Resolver, service string, want []resolve.Endpoint) {
	t.Helper()
	var got []resolve.Endpoint
	var err error
	deadline := time.Now().Add(etcdBound)
	for time.Now().Before(deadline) {
		got, err = r.Resolve(etcdCtx(t), service)
		if want == nil && errors.Is(err, resolve.ErrNotFound) || want != nil && err == nil && etcdSameEPs(got, want) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("Resolve(%q) = %v, %v; want %v", service, got, err, want)
}

// waitWatch waits until ch delivers exactly want (nil: the empty set).
func etcdWaitWatch(t *testing.T, ch <-chan []resolve.Endpoint, want []resolve.Endpoint) {
	t.Helper()
	timeout := time.After(etcdBound)
	var last []resolve.Endpoint
	for {
		select {
		case got, ok := <-ch:
			require.True(t, ok, "watch closed early")
			if etcdSameEPs(got, want) {
				return
			}
			last = got
		case <-timeout:
			t.Fatalf("watch did not deliver %v; last %v", want, last)
		}
	}
}

// equalEPs compares addresses and keys; TTLs are the registrant's business.
func etcdSameEPs(a, b []resolve.Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Addr != b[i].Addr || a[i].Key != b[i].Key {
			return false
		}
	}
	return true
}

func TestEtcdConformance(t *testing.T) {
	endpoints := etcdtest.Endpoints(t)
	t.Run("Etcd", func(t *testing.T) {
		resolvetest.RunSigned(t, func(t *testing.T) resolve.Resolver {
			return newEtcd(t, endpoints, etcd.Config{})
		})
	})
	t.Run("StaleReads", func(t *testing.T) {
		resolvetest.RunSigned(t, func(t *testing.T) resolve.Resolver {
			return newEtcd(t, endpoints, etcd.Config{StaleReads: true})
		})
	})
	t.Run("CacheOverEtcd", func(t *testing.T) {
		resolvetest.RunSigned(t, func(t *testing.T) resolve.Resolver {
			e := newEtcd(t, endpoints, etcd.Config{})
			c := resolve.NewCache(e, resolve.CacheConfig{})
			t.Cleanup(func() { _ = c.Close() }) // before the Etcd's Close
			return c
		})
	})
}

func TestEtcdOpen(t *testing.T) {
	endpoints := etcdtest.Endpoints(t)
	u := "etcd://" + strings.Join(endpoints, ",") + etcdtest.Prefix(t)
	r, err := resolve.Open(etcdCtx(t), u)
	require.NoError(t, err)
	defer func() { require.NoError(t, r.(io.Closer).Close()) }()
	sr, ok := r.(resolve.SignedRegistrar)
	require.True(t, ok, "an etcd:// resolver registers")
	w, ok := r.(resolve.Watcher)
	require.True(t, ok, "an etcd:// resolver watches")

	key, fp := etcdSigner(t)
	ch, err := w.Watch(etcdCtx(t), "echo.demo")
	require.NoError(t, err)
	etcdWaitWatch(t, ch, nil)
	reg, err := sr.RegisterSigned(etcdCtx(t), "Echo.Demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, key)
	require.NoError(t, err)
	defer reg.Close()
	want := []resolve.Endpoint{etcdEP("127.0.0.1:4000", fp)}
	etcdWaitResolve(t, r, "echo.demo", want)
	etcdWaitWatch(t, ch, want)

	for _, bad := range []string{"etcd://", "etcd:///roam", "etcd://host/", "etcd://h:1,/p", "etcd://h:0/p", "etcd://u:p@h:1/p", "etcd://h:1/p?x=1"} {
		_, err := resolve.Open(etcdCtx(t), bad)
		require.ErrorIs(t, err, resolve.ErrInvalid, bad)
	}
}

func TestEtcdSignedRegistration(t *testing.T) {
	endpoints := etcdtest.Endpoints(t)
	e := newEtcd(t, endpoints, etcd.Config{})
	owner, ownerFP := etcdSigner(t)
	rival, rivalFP := etcdSigner(t)
	ctx := etcdCtx(t)

	_, err := e.Register(ctx, "api.demo", etcdEP("127.0.0.1:4000", ownerFP))
	require.ErrorIs(t, err, resolve.ErrUnsigned, "plain Register is refused")
	require.ErrorContains(t, err, "RegisterSigned")
	var rerr *resolve.Error
	require.ErrorAs(t, err, &rerr)
	require.Equal(t, "register", rerr.Op)
	require.Equal(t, "api.demo", rerr.Service)

	reg, err := e.RegisterSigned(ctx, "api.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, owner)
	require.NoError(t, err)
	defer reg.Close()
	_, err = e.RegisterSigned(ctx, "API.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4001")}, rival)
	require.ErrorIs(t, err, resolve.ErrNotOwner, "the name is bound to its first key")
	_, err = e.RegisterSigned(ctx, "api.demo", etcdEP("127.0.0.1:4002", rivalFP), owner)
	require.ErrorIs(t, err, resolve.ErrInvalid, "the endpoint must pin the signing key")
	_, err = e.RegisterSigned(ctx, "rk--"+rivalFP.String()+".api.demo", etcdEP("127.0.0.1:4003", ownerFP), owner)
	require.ErrorIs(t, err, resolve.ErrNotOwner, "a self-certifying ID takes only its own key")
	_, err = e.RegisterSigned(ctx, "rk--nonsense.api.demo", etcdEP("127.0.0.1:4003", ownerFP), owner)
	require.ErrorIs(t, err, resolve.ErrInvalid)
	etcdWaitResolve(t, e, "api.demo", []resolve.Endpoint{etcdEP("127.0.0.1:4000", ownerFP)})

	// The same address again supersedes: closing the older registration
	// leaves the newer one.
	again, err := e.RegisterSigned(ctx, "api.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000"), TTL: time.Minute}, owner)
	require.NoError(t, err)
	require.NoError(t, reg.Close())
	eps, err := e.Resolve(ctx, "api.demo")
	require.NoError(t, err)
	require.Equal(t, []resolve.Endpoint{{Addr: netip.MustParseAddrPort("127.0.0.1:4000"), Key: ownerFP, TTL: time.Minute}}, eps)
	require.NoError(t, again.Close())
	etcdWaitResolve(t, e, "api.demo", nil)
}

// TestEtcdForgedRecords writes records past RegisterSigned, as anyone with
// write access to etcd could, and checks that readers drop every one.
func TestEtcdForgedRecords(t *testing.T) {
	endpoints := etcdtest.Endpoints(t)
	prefix := etcdtest.Prefix(t)
	e := newEtcd(t, endpoints, etcd.Config{Prefix: prefix})
	other := newEtcd(t, endpoints, etcd.Config{Prefix: etcdtest.Prefix(t)})
	raw := rawEtcd(t, endpoints)
	owner, ownerFP := etcdSigner(t)
	rival, rivalFP := etcdSigner(t)
	ctx := etcdCtx(t)
	const svc = "bank.demo"
	base := prefix + "svc/" + svc + "/"

	reg, err := e.RegisterSigned(ctx, svc, resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, owner)
	require.NoError(t, err)
	defer reg.Close()
	good := []resolve.Endpoint{etcdEP("127.0.0.1:4000", ownerFP)}
	ch, err := e.Watch(ctx, svc)
	require.NoError(t, err)
	etcdWaitWatch(t, ch, good)

	// The same record, signed for another prefix: a replay across clusters.
	_, err = other.RegisterSigned(ctx, svc, resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:5000")}, owner)
	require.NoError(t, err)
	elsewhere, err := raw.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	require.NoError(t, err)
	var otherKey string
	for _, kv := range elsewhere.Kvs {
		if strings.HasSuffix(string(kv.Key), "/svc/"+svc+"/ep/127.0.0.1:5000") {
			otherKey = string(kv.Key)
		}
	}
	require.NotEmpty(t, otherKey)
	replayed, err := raw.Get(ctx, otherKey)
	require.NoError(t, err)

	record := func(addr string, key resolve.Fingerprint, signer crypto.Signer, service string) string {
		e0 := etcdEP(addr, key)
		proof, err := resolve.Sign(signer, "roam etcd v1", []byte(prefix), service, e0)
		require.NoError(t, err)
		b, err := json.Marshal(map[string]any{"v": 1, "addr": e0.Addr, "key": e0.Key, "pub": proof.PublicKey, "sig": proof.Signature})
		require.NoError(t, err)
		return string(b)
	}
	realRecord, err := raw.Get(ctx, base+"ep/127.0.0.1:4000")
	require.NoError(t, err)
	require.Len(t, realRecord.Kvs, 1)
	tampered := strings.Replace(string(realRecord.Kvs[0].Value), "127.0.0.1:4000", "127.0.0.1:6666", 1)

	forgeries := map[string]string{
		"ep/127.0.0.1:5000":   string(replayed.Kvs[0].Value),                          // another prefix's proof
		"ep/127.0.0.1:6666":   tampered,                                               // address changed after signing
		"ep/127.0.0.1:6667":   record("127.0.0.1:6667", rivalFP, rival, svc),          // valid proof, wrong key
		"ep/127.0.0.1:6668":   record("127.0.0.1:6668", ownerFP, owner, "other.demo"), // signed for another service
		"ep/127.0.0.1:6669":   string(realRecord.Kvs[0].Value),                        // a real record under another address
		"ep/127.0.0.1:6670":   `{"v":2,"addr":"127.0.0.1:6670"}`,                      // a version from the future
		"ep/127.0.0.1:6671":   `not json`,                                             // garbage
		"ep/127.0.0.1:6672":   strings.Repeat("x", 10<<10),                            // too big to parse
		"ep/[::1]:6673":       record("[::1]:6673", ownerFP, owner, svc) + "trailing", // not one JSON value
		"unknown/127.0.0.1:1": record("127.0.0.1:1", ownerFP, owner, svc),             // not a record key
	}
	for k, v := range forgeries {
		_, err := raw.Put(ctx, base+k, v)
		require.NoError(t, err)
	}
	// A record that passes, written last: once the watch shows it, it has
	// seen every forgery before it.
	_, err = raw.Put(ctx, base+"ep/127.0.0.1:4001", record("127.0.0.1:4001", ownerFP, owner, svc))
	require.NoError(t, err)
	want := []resolve.Endpoint{etcdEP("127.0.0.1:4000", ownerFP), etcdEP("127.0.0.1:4001", ownerFP)}
	etcdWaitWatch(t, ch, want)
	eps, err := e.Resolve(ctx, svc)
	require.NoError(t, err)
	require.Equal(t, want, eps)

	// A plain name is bound by its owner key, which only etcd's access
	// control guards: whoever rewrites it takes the name over (and the
	// owner's own records drop out)...
	_, err = raw.Put(ctx, base+"owner", rivalFP.String())
	require.NoError(t, err)
	etcdWaitResolve(t, e, svc, []resolve.Endpoint{etcdEP("127.0.0.1:6667", rivalFP)})
	// ...but a self-certifying ID is bound by its own key alone.
	pinned := "rk--" + ownerFP.String() + ".bank.demo"
	preg, err := e.RegisterSigned(ctx, pinned, resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, owner)
	require.NoError(t, err)
	defer preg.Close()
	pbase := prefix + "svc/" + pinned + "/"
	_, err = raw.Put(ctx, pbase+"owner", rivalFP.String())
	require.NoError(t, err)
	_, err = raw.Put(ctx, pbase+"ep/127.0.0.1:6675", record("127.0.0.1:6675", rivalFP, rival, pinned))
	require.NoError(t, err)
	etcdWaitResolve(t, e, pinned, []resolve.Endpoint{etcdEP("127.0.0.1:4000", ownerFP)})
}

// TestEtcdWatchAcrossClients checks that a change made through one
// connection reaches a watcher on another, by etcd's watch.
func TestEtcdWatchAcrossClients(t *testing.T) {
	endpoints := etcdtest.Endpoints(t)
	prefix := etcdtest.Prefix(t)
	provider := newEtcd(t, endpoints, etcd.Config{Prefix: prefix})
	watcher := newEtcd(t, endpoints, etcd.Config{Prefix: prefix})
	key, fp := etcdSigner(t)
	ctx, cancel := context.WithCancel(etcdCtx(t))
	ch, err := watcher.Watch(ctx, "moving.demo")
	require.NoError(t, err)
	etcdWaitWatch(t, ch, nil)

	a, err := provider.RegisterSigned(ctx, "moving.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, key)
	require.NoError(t, err)
	etcdWaitWatch(t, ch, []resolve.Endpoint{etcdEP("127.0.0.1:4000", fp)})
	// A move: the new address first, then the old one withdrawn.
	b, err := provider.RegisterSigned(ctx, "moving.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.2:4000")}, key)
	require.NoError(t, err)
	require.NoError(t, a.Close())
	etcdWaitWatch(t, ch, []resolve.Endpoint{etcdEP("127.0.0.2:4000", fp)})
	require.NoError(t, b.Close())
	etcdWaitWatch(t, ch, nil)
	cancel()
	for range ch {
	}
}

// TestEtcdLeaseExpiry stops a registrant's keep-alives without closing its
// registration, as a crash would, and checks that etcd drops the record
// once its lease runs out, and that watchers hear of it.
func TestEtcdLeaseExpiry(t *testing.T) {
	endpoints := etcdtest.Endpoints(t)
	prefix := etcdtest.Prefix(t)
	observer := newEtcd(t, endpoints, etcd.Config{Prefix: prefix})
	doomed := rawEtcd(t, endpoints)
	const ttl = 2 * time.Second // keep-alives at most ~1.2 s apart: see TestEtcdMemberKilled
	crasher := newEtcd(t, nil, etcd.Config{Client: doomed, Prefix: prefix, LeaseTTL: ttl, DialTimeout: time.Second})
	key, fp := etcdSigner(t)
	ctx := etcdCtx(t)
	_, err := crasher.RegisterSigned(ctx, "fragile.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, key)
	require.NoError(t, err)
	want := []resolve.Endpoint{etcdEP("127.0.0.1:4000", fp)}
	ch, err := observer.Watch(ctx, "fragile.demo")
	require.NoError(t, err)
	etcdWaitWatch(t, ch, want)

	// Outlive the TTL with keep-alives running: the lease holds.
	time.Sleep(ttl + 500*time.Millisecond)
	eps, err := observer.Resolve(ctx, "fragile.demo")
	require.NoError(t, err)
	require.True(t, etcdSameEPs(want, eps), "kept alive, the record stays")

	require.NoError(t, doomed.Close()) // the crash: no revoke, no more keep-alives
	crashed := time.Now()
	eps, err = observer.Resolve(ctx, "fragile.demo")
	require.NoError(t, err, "nothing withdrew the record")
	require.True(t, etcdSameEPs(want, eps))
	etcdWaitWatch(t, ch, nil)
	gone := time.Since(crashed)
	t.Logf("record gone %v after the crash (lease TTL %v)", gone.Round(time.Millisecond), ttl)
	// The last keep-alive was sent at most TTL/3 plus the client's 500 ms
	// tick before the crash, so the lease had at least ~0.8 s left (less
	// on a machine that ran that tick late); a withdrawal would take
	// milliseconds.
	require.Greater(t, gone, ttl/4, "the lease, not a withdrawal, removed it")
	etcdWaitResolve(t, observer, "fragile.demo", nil)
}

func TestEtcdClosed(t *testing.T) {
	endpoints := etcdtest.Endpoints(t)
	prefix := etcdtest.Prefix(t)
	e, err := etcd.New(etcdCtx(t), etcd.Config{Endpoints: endpoints, Prefix: prefix})
	require.NoError(t, err)
	key, _ := etcdSigner(t)
	ctx := etcdCtx(t)
	reg, err := e.RegisterSigned(ctx, "short.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, key)
	require.NoError(t, err)
	ch, err := e.Watch(ctx, "short.demo")
	require.NoError(t, err)

	require.NoError(t, e.Close())
	require.NoError(t, e.Close(), "Close is idempotent")
	require.NoError(t, reg.Close(), "closing a registration after the Etcd stays harmless")
	for range ch { // Close ends the watch
	}
	_, err = e.Resolve(ctx, "short.demo")
	require.ErrorIs(t, err, resolve.ErrClosed)
	_, err = e.Watch(ctx, "short.demo")
	require.ErrorIs(t, err, resolve.ErrClosed)
	_, err = e.RegisterSigned(ctx, "short.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, key)
	require.ErrorIs(t, err, resolve.ErrClosed)

	// Close withdrew the registration.
	etcdWaitResolve(t, newEtcd(t, endpoints, etcd.Config{Prefix: prefix}), "short.demo", nil)
}

// TestEtcdUnreachable needs no etcd: nothing listens on port 1.
func TestEtcdUnreachable(t *testing.T) {
	start := time.Now()
	_, err := etcd.New(context.Background(), etcd.Config{
		Endpoints: []string{"127.0.0.1:1"}, DialTimeout: 300 * time.Millisecond,
	})
	require.Error(t, err)
	require.Less(t, time.Since(start), etcdBound)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = etcd.New(ctx, etcd.Config{Endpoints: []string{"127.0.0.1:1"}})
	require.ErrorIs(t, err, context.Canceled)
	_, err = etcd.New(context.Background(), etcd.Config{})
	require.ErrorIs(t, err, resolve.ErrInvalid)
}
