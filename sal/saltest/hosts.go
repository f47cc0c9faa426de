package saltest

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/resolvetest"
	"github.com/roamnet/roam/sal"
)

// RunHosts checks a backend end to end, under two sal Hosts on loopback
// that each get their own resolver from newResolver (as two processes
// would): the provider Listens (registering through the backend), the
// client Dials by service ID, and data crosses both ways byte-exact. When
// the backend can register and watch, the provider then Rebinds to a new
// socket in the middle of a transfer, and the live flow must follow it
// through the backend's watch without losing, duplicating or reordering a
// byte.
func RunHosts(t *testing.T, newResolver func(t *testing.T) resolve.Resolver) {
	t.Helper()
	t.Run("DialListen", func(t *testing.T) { testHosts(t, newResolver, false) })
	t.Run("FollowRebind", func(t *testing.T) {
		if _, ok := newResolver(t).(resolve.Watcher); !ok {
			t.Skip("the backend cannot watch, so flows cannot follow a provider through it")
		}
		testHosts(t, newResolver, true)
	})
}

func newHost(t *testing.T, r resolve.Resolver) *sal.Host {
	h, err := sal.NewHost(sal.Config{Resolver: r, ListenAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

func testHosts(t *testing.T, newResolver func(t *testing.T) resolve.Resolver, rebind bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	provider := newHost(t, newResolver(t))
	client := newHost(t, newResolver(t))
	service := name(t)
	ln, err := provider.Listen(ctx, service)
	require.NoError(t, err)
	defer ln.Close()

	const size = 8 << 20
	up, down := randomBytes(size, 1), randomBytes(size, 2)
	served := make(chan [sha256.Size]byte, 1)
	go func() {
		c, err := ln.AcceptContext(ctx)
		if err != nil {
			served <- [sha256.Size]byte{}
			return
		}
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			c.Write(down)
			c.CloseWrite()
		}()
		h := sha256.New()
		io.Copy(h, c)
		<-wrote // closing before then would cut the other direction short
		c.Close()
		served <- [sha256.Size]byte(h.Sum(nil))
	}()

	var c *sal.Conn
	require.Eventually(t, func() bool { // remote backends are eventually consistent
		c, err = client.Dial(ctx, service)
		return err == nil
	}, resolvetest.Settle, 10*time.Millisecond, "dial %s", service)
	defer c.Close()
	got := make(chan [sha256.Size]byte, 1)
	go func() {
		h := sha256.New()
		io.Copy(h, c)
		got <- [sha256.Size]byte(h.Sum(nil))
	}()
	for off := 0; off < size; off += 256 << 10 {
		_, err := c.Write(up[off : off+256<<10])
		require.NoError(t, err)
		if rebind && off == size/2 {
			require.NoError(t, provider.Rebind(ctx, "127.0.0.1:0"))
		}
	}
	require.NoError(t, c.CloseWrite())
	require.Equal(t, sha256.Sum256(down), waitSum(t, got), "provider to client")
	require.Equal(t, sha256.Sum256(up), waitSum(t, served), "client to provider")
	if rebind {
		// The client's resolver is its Host's Cache, which the backend's
		// watch updates asynchronously: the flow may have followed the
		// provider before the cache did.
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			eps, err := client.Resolver().Resolve(ctx, service)
			require.NoError(c, err)
			require.Len(c, eps, 1)
			require.Equal(c, provider.LocalAddr(), eps[0].Addr)
		}, resolvetest.Settle, time.Millisecond, "the client's resolver follows the provider")
	}
}

func waitSum(t *testing.T, ch <-chan [sha256.Size]byte) [sha256.Size]byte {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(60 * time.Second):
		t.Fatal("transfer did not finish in 60s")
		return [sha256.Size]byte{}
	}
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}
