package sal

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

// watchCounter is a caching resolver (so a Host uses it as it is) that
// counts the watches a Host opens, and can hold the first one open for a
// while, as a remote resolver's round trip does.
type watchCounter struct {
	*resolve.Cache
	watches atomic.Int64
	hold    chan struct{} // the first Watch waits for it, if set
}

func (w *watchCounter) Watch(ctx context.Context, service string) (<-chan []resolve.Endpoint, error) {
	if w.watches.Add(1) == 1 && w.hold != nil {
		<-w.hold
	}
	return w.Cache.Watch(ctx, service)
}

// A server move with many flows costs the dialing Host one watch of the
// service, not one per flow and one per resume, and every flow follows.
func TestOneWatchPerService(t *testing.T) {
	mem := resolve.NewMemory()
	wc := &watchCounter{Cache: resolve.NewCache(mem, resolve.CacheConfig{})}
	t.Cleanup(func() { wc.Close() })
	server := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: wc})
	l, err := server.Listen(testCtx(t), "many.demo")
	require.NoError(t, err)
	const flows = 8
	var conns [flows]*Conn
	var peers [flows]*Conn
	for i := range conns {
		conns[i], peers[i] = openPair(t, client, l, "many.demo")
	}
	require.NoError(t, server.Rebind(testCtx(t), loopbackAddr(3)))
	for i := range conns {
		msg := []byte{byte(i)}
		_, err := conns[i].Write(msg)
		require.NoError(t, err)
		got := make([]byte, 1)
		peers[i].SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = io.ReadFull(peers[i], got)
		require.NoError(t, err, "flow %d after the move", i)
		require.Equal(t, msg, got)
		require.Equal(t, server.LocalAddr(), conns[i].RemoteAddr().(Addr).Endpoint, "flow %d followed the server", i)
	}
	require.EqualValues(t, 1, wc.watches.Load(), "one watch for %d flows and their resumes", flows)
}

// Opening a watch, a round trip to a remote resolver, holds no lock the
// Host's other work needs: while the first dial's watch hangs, the Host
// still answers.
func TestWatchOpensOutsideTheHostLock(t *testing.T) {
	mem := resolve.NewMemory()
	wc := &watchCounter{Cache: resolve.NewCache(mem, resolve.CacheConfig{}), hold: make(chan struct{})}
	t.Cleanup(func() { wc.Close() })
	server := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: wc})
	l, err := server.Listen(testCtx(t), "slow.demo")
	require.NoError(t, err)
	dialed := make(chan error, 1)
	go func() {
		c, err := client.Dial(testCtx(t), "slow.demo")
		if err == nil {
			defer c.Close()
		}
		dialed <- err
	}()
	require.Eventually(t, func() bool { return wc.watches.Load() == 1 }, 10*time.Second, time.Millisecond, "the dial opens a watch")
	answered := make(chan struct{})
	go func() {
		client.Paths() // takes the Host's lock
		close(answered)
	}()
	select {
	case <-answered:
	case <-time.After(5 * time.Second):
		close(wc.hold)
		t.Fatal("the Host's lock was held across the resolver's Watch")
	}
	close(wc.hold)
	require.NoError(t, <-dialed)
	_ = l
}
