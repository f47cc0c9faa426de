package etcd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/roamnet/roam/resolve/etcd/internal/etcdtest"

	"github.com/roamnet/roam/resolve"
)

func TestParseEtcdURL(t *testing.T) {
	for _, tt := range []struct {
		in        string
		endpoints []string
		prefix    string
	}{
		{"etcd://127.0.0.1:2379", []string{"127.0.0.1:2379"}, ""},
		{"etcd://127.0.0.1:2379/", []string{"127.0.0.1:2379"}, ""},
		{"etcd://a:1,b:2,10.0.0.3:3/roam/lab", []string{"a:1", "b:2", "10.0.0.3:3"}, "/roam/lab"},
		// net/url takes an IPv6 literal only as the sole host.
		{"etcd://[::1]:2379/p", []string{"[::1]:2379"}, "/p"},
		{"etcd://etcd.internal:2379/fleet/", []string{"etcd.internal:2379"}, "/fleet/"},
	} {
		u, err := url.Parse(tt.in)
		require.NoError(t, err, tt.in)
		cfg, err := parseEtcdURL(u)
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.endpoints, cfg.Endpoints, tt.in)
		require.Equal(t, tt.prefix, cfg.Prefix, tt.in)
	}
	for _, in := range []string{
		"etcd:127.0.0.1:2379", "etcd://", "etcd:///p", "etcd://h/p", "etcd://:1/p", "etcd://h:1,,h:2/p",
		"etcd://h:0/p", "etcd://h:65536/p", "etcd://h:x/p", "etcd://u:pw@h:1/p", "etcd://h:1/p?ttl=1",
		"etcd://h:1/p#f", "etcds://h:1/p",
	} {
		u, err := url.Parse(in)
		if err != nil {
			continue // Open refuses these itself
		}
		_, err = parseEtcdURL(u)
		require.ErrorIs(t, err, resolve.ErrInvalid, in)
		require.NotContains(t, err.Error(), "pw", "no password in messages")
	}
}

// FuzzEtcdRecord feeds decode what anyone with write access to etcd could
// store: it must never panic, and whatever it accepts must verify.
func FuzzEtcdRecord(f *testing.F) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	fp, err := resolve.FingerprintOf(key.Public())
	require.NoError(f, err)
	e := &Backend{binding: []byte("/roam/"), log: slog.New(slog.DiscardHandler)}
	ep := resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000"), Key: fp}
	proof, err := resolve.Sign(key, etcdDomain, e.binding, "svc.demo", ep)
	require.NoError(f, err)
	good, err := json.Marshal(etcdRecord{V: 1, Addr: ep.Addr, Key: fp, Pub: proof.PublicKey, Sig: proof.Signature})
	require.NoError(f, err)
	f.Add("svc.demo", "127.0.0.1:4000", good)
	f.Add("svc.demo", "127.0.0.1:4001", good)
	f.Add("other.demo", "127.0.0.1:4000", good)
	f.Add("svc.demo", "127.0.0.1:4000", []byte(`{"v":1,"addr":"127.0.0.1:4000","key":"","pub":"","sig":""}`))
	f.Add("svc.demo", "[::1]:1", []byte(`{"v":1,"addr":"[::1]:1","ttl":-1}`))
	f.Add("svc.demo", "x", []byte(`null`))
	f.Fuzz(func(t *testing.T, svc, addr string, value []byte) {
		got, err := e.decode(svc, addr, value)
		if err != nil {
			require.True(t, errors.Is(err, resolve.ErrInvalid) || errors.Is(err, resolve.ErrUnsigned), "%v", err)
			return
		}
		require.Equal(t, addr, got.Addr.String())
		require.NoError(t, got.Validate())
		var rec etcdRecord
		require.NoError(t, json.Unmarshal(value, &rec))
		require.NoError(t, resolve.Proof{PublicKey: rec.Pub, Signature: rec.Sig}.Verify(etcdDomain, e.binding, svc, got))
	})
}

// TestSlogCore checks that the etcd client's zap logs reach the Logger,
// with their fields, at the mapped levels.
func TestSlogCore(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	z := zap.New(slogCore{log: log}).With(zap.String("endpoint", "127.0.0.1:2379"))
	z.Info("retrying", zap.Int("attempt", 2))
	z.Warn("lost leader", zap.Error(errors.New("no leader")))
	out := buf.String()
	require.Contains(t, out, `level=DEBUG msg=retrying component=etcd-client attempt=2 endpoint=127.0.0.1:2379`)
	require.Contains(t, out, `level=WARN msg="lost leader" component=etcd-client endpoint=127.0.0.1:2379 error="no leader"`)

	buf.Reset()
	quiet := zap.New(slogCore{log: slog.New(slog.DiscardHandler)})
	quiet.Error("dropped")
	require.False(t, quiet.Core().Enabled(zapcore.ErrorLevel), "a nil Logger silences the client")
}

// TestEtcdWatchCompacted starts a watch from a revision that etcd has
// compacted away, as a watch that lost its stream for a while would: etcd
// refuses it, and the watch must list the keys again and carry on.
func TestEtcdWatchCompacted(t *testing.T) {
	cluster := etcdtest.Start(t, 1) // of its own: compaction is cluster-wide
	var logs bytes.Buffer
	var mu sync.Mutex
	e, err := New(context.Background(), Config{
		Endpoints: cluster.Endpoints(),
		Logger:    slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	require.NoError(t, err)
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	a, err := e.RegisterSigned(ctx, "old.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, key)
	require.NoError(t, err)
	w := &etcdWatch{e: e, svc: "old.demo", prefix: e.svcPrefix("old.demo")}
	require.NoError(t, w.list(ctx))
	w.last = w.endpoints()
	require.Len(t, w.last, 1)

	b, err := e.RegisterSigned(ctx, "old.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4001")}, key)
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, a.Close())
	resp, err := e.cli.Get(ctx, "any")
	require.NoError(t, err)
	_, err = e.cli.Compact(ctx, resp.Header.Revision)
	require.NoError(t, err)

	ch := make(chan []resolve.Endpoint, 1)
	e.wg.Add(1)
	go w.run(ctx, ch)
	select {
	case eps := <-ch:
		require.Len(t, eps, 1)
		require.Equal(t, netip.MustParseAddrPort("127.0.0.1:4001"), eps[0].Addr)
	case <-ctx.Done():
		t.Fatal("the watch did not recover from compaction")
	}
	mu.Lock()
	require.Contains(t, logs.String(), "listing again")
	mu.Unlock()
	cancel()
	for range ch {
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
