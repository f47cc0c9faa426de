package etcd_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/etcd"
	"github.com/roamnet/roam/resolve/etcd/internal/etcdtest"
	"github.com/roamnet/roam/sal"
	"github.com/roamnet/roam/sal/saltest"
)

// etcdHost returns a sal.Host on loopback over r, closed when the test
// ends (before r, whose cleanup was registered first).
func etcdHost(t *testing.T, r resolve.Resolver) *sal.Host {
	t.Helper()
	h, err := sal.NewHost(sal.Config{Resolver: r, ListenAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

// TestEtcdHosts runs two Hosts, each with its own etcd client as two
// processes would have, that Listen and Dial by service ID through the
// etcd backend; the provider then moves twice in mid-transfer, and the
// flow must follow it through the backend's watch, byte-exact.
func TestEtcdHosts(t *testing.T) {
	endpoints := etcdtest.Endpoints(t)
	prefix := etcdtest.Prefix(t)
	observer := newEtcd(t, endpoints, etcd.Config{Prefix: prefix})
	provider := etcdHost(t, newEtcd(t, endpoints, etcd.Config{Prefix: prefix}))
	client := etcdHost(t, newEtcd(t, endpoints, etcd.Config{Prefix: prefix}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("SelfCertifying", func(t *testing.T) {
		id, err := provider.ServiceID("pinned.etcd.demo")
		require.NoError(t, err)
		ln, err := provider.Listen(ctx, id.String())
		require.NoError(t, err)
		defer ln.Close()
		// sal looks the name up without its key label, and checks the key
		// in the handshake.
		etcdWaitResolve(t, observer, "pinned.etcd.demo", []resolve.Endpoint{{Addr: provider.LocalAddr(), Key: provider.Key()}})
		c, sc := etcdOpenPair(t, ctx, client, ln, id.String())
		require.True(t, c.Authenticated())
		etcdTransfer(t, c, sc, 1<<20, nil)
	})

	// A key-only ID reaches the backend as "rk--<fp>", which binds itself.
	t.Run("KeyOnly", func(t *testing.T) {
		id, err := sal.NewServiceID("", provider.Key())
		require.NoError(t, err)
		ln, err := provider.ListenService(ctx, id)
		require.NoError(t, err)
		defer ln.Close()
		etcdWaitResolve(t, observer, id.String(), []resolve.Endpoint{{Addr: provider.LocalAddr(), Key: provider.Key()}})
		c, sc := etcdOpenPair(t, ctx, client, ln, id.String())
		require.True(t, c.Authenticated())
		etcdTransfer(t, c, sc, 1<<20, nil)
	})

	t.Run("FollowRebind", func(t *testing.T) {
		const svc = "stream.etcd.demo"
		ln, err := provider.Listen(ctx, svc)
		require.NoError(t, err)
		defer ln.Close()
		// Listen registered with the provider's key, which the name is now
		// bound to.
		etcdWaitResolve(t, observer, svc, []resolve.Endpoint{{Addr: provider.LocalAddr(), Key: provider.Key()}})
		c, sc := etcdOpenPair(t, ctx, client, ln, svc)
		require.Equal(t, provider.Key(), c.PeerKey())

		const total, moves = 16 << 20, 2
		var moveErrs []error
		moved := 0
		etcdTransfer(t, c, sc, total, func(sent int) {
			if moved < moves && sent >= (moved+1)*total/(moves+1) {
				moved++
				// Linux routes all of 127/8 to loopback: a new address,
				// as after a handover.
				addr := fmt.Sprintf("127.0.0.%d:0", 10+moved)
				if err := provider.Rebind(ctx, addr); err != nil {
					moveErrs = append(moveErrs, err)
				}
			}
		})
		require.Equal(t, moves, moved)
		require.Empty(t, moveErrs)
		require.NotZero(t, c.Stats().Resumes, "the flow resumed at the provider's new address")
		require.Equal(t, provider.LocalAddr(), c.RemoteAddr().(sal.Addr).Endpoint)
		etcdWaitResolve(t, observer, svc, []resolve.Endpoint{{Addr: provider.LocalAddr(), Key: provider.Key()}})
	})
}

// TestEtcdRunHosts runs the suite every backend runs under sal Hosts.
func TestEtcdRunHosts(t *testing.T) {
	endpoints := etcdtest.Endpoints(t)
	prefix := etcdtest.Prefix(t) // one for both Hosts, so that they meet
	saltest.RunHosts(t, func(t *testing.T) resolve.Resolver {
		return newEtcd(t, endpoints, etcd.Config{Prefix: prefix})
	})
}

// etcdOpenPair dials service from client and accepts the flow on ln.
func etcdOpenPair(t *testing.T, ctx context.Context, client *sal.Host, ln *sal.Listener, service string) (c, sc *sal.Conn) {
	t.Helper()
	accepted := make(chan *sal.Conn, 1)
	go func() {
		sc, err := ln.AcceptContext(ctx)
		if err != nil {
			sc = nil
		}
		accepted <- sc
	}()
	c, err := client.Dial(ctx, service)
	require.NoError(t, err)
	sc = <-accepted
	require.NotNil(t, sc)
	t.Cleanup(func() { c.Close(); sc.Close() })
	return c, sc
}

// etcdTransfer streams n pseudo-random bytes each way over c and sc at
// once, and checks that each side reads exactly what the other wrote, by
// length and SHA-256. progress is called after each chunk the dialer
// writes, with the bytes written so far.
func etcdTransfer(t *testing.T, c, sc *sal.Conn, n int, progress func(sent int)) {
	t.Helper()
	type sum struct {
		n   int64
		sha [sha256.Size]byte
		err error
	}
	send := func(w *sal.Conn, seed uint64, progress func(int)) (sum, error) {
		h := sha256.New()
		rng := rand.NewChaCha8([32]byte{byte(seed)})
		chunk := make([]byte, 64<<10)
		sent := 0
		for sent < n {
			p := chunk[:min(len(chunk), n-sent)]
			_, _ = rng.Read(p)
			h.Write(p)
			if _, err := w.Write(p); err != nil {
				return sum{}, err
			}
			sent += len(p)
			if progress != nil {
				progress(sent)
			}
		}
		return sum{n: int64(sent), sha: [sha256.Size]byte(h.Sum(nil))}, w.CloseWrite()
	}
	recv := func(r *sal.Conn, out chan<- sum) {
		h := sha256.New()
		m, err := io.Copy(h, r)
		out <- sum{n: m, sha: [sha256.Size]byte(h.Sum(nil)), err: err}
	}
	toListener, toDialer := make(chan sum, 1), make(chan sum, 1)
	go recv(sc, toListener)
	go recv(c, toDialer)
	var wg sync.WaitGroup
	var sentC, sentS sum
	var errC, errS error
	wg.Go(func() { sentC, errC = send(c, 1, progress) })
	wg.Go(func() { sentS, errS = send(sc, 2, nil) })
	wg.Wait()
	require.NoError(t, errC)
	require.NoError(t, errS)
	for _, x := range []struct {
		name string
		ch   chan sum
		want sum
	}{{"dialer→listener", toListener, sentC}, {"listener→dialer", toDialer, sentS}} {
		select {
		case got := <-x.ch:
			require.NoError(t, got.err, x.name)
			require.Equal(t, x.want.n, got.n, "%s: length", x.name)
			require.Equal(t, x.want.sha, got.sha, "%s: SHA-256", x.name)
		case <-time.After(time.Minute):
			t.Fatalf("%s: transfer hung", x.name)
		}
	}
}
