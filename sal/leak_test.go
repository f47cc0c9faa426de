package sal

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// openFDs counts this process's open file descriptors (Linux only).
func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd on this system")
	}
	return len(ents)
}

// TestNoSocketLeak runs Hosts through successful and failing dials, then
// checks that closing them gave back every socket. (Goroutines are checked
// for every test by TestMain.)
func TestNoSocketLeak(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts /proc/self/fd")
	}
	before := openFDs(t)
	func() {
		mem := resolve.NewMemory()
		server, err := NewHost(Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
		require.NoError(t, err)
		defer server.Close()
		client, err := NewHost(Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
		require.NoError(t, err)
		defer client.Close()
		l, err := server.Listen(context.Background(), "fd.demo")
		require.NoError(t, err)
		for range 3 {
			c := pingPong(t, client, l, "fd.demo")
			c.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err = client.Dial(ctx, "missing.demo")
		require.ErrorIs(t, err, resolve.ErrNotFound)
		_, err = NewHost(Config{Resolver: mem, ListenAddr: "256.0.0.1:0"})
		require.Error(t, err)
	}()
	require.Eventually(t, func() bool { return openFDs(t) <= before }, 5*time.Second, 10*time.Millisecond,
		"file descriptors leaked: %d before, %d after", before, openFDs(t))
}

func TestListenRegistersAndWithdraws(t *testing.T) {
	mem := resolve.NewMemory()
	h := newHost(t, Config{Resolver: mem})
	l, err := h.Listen(testCtx(t), "reg.demo")
	require.NoError(t, err)
	eps, err := mem.Resolve(testCtx(t), "reg.demo")
	require.NoError(t, err)
	require.Equal(t, []resolve.Endpoint{{Addr: h.LocalAddr(), Key: h.Key()}}, eps)

	require.NoError(t, l.Close())
	_, err = mem.Resolve(testCtx(t), "reg.demo")
	require.ErrorIs(t, err, resolve.ErrNotFound)

	// AdvertiseAddr replaces the socket's address in the registration.
	adv := newHost(t, Config{Resolver: mem, AdvertiseAddr: h.LocalAddr()})
	_, err = adv.Listen(testCtx(t), "adv.demo")
	require.NoError(t, err)
	eps, err = mem.Resolve(testCtx(t), "adv.demo")
	require.NoError(t, err)
	require.Equal(t, h.LocalAddr(), eps[0].Addr)
}

func TestListenerCloseRejectsQueuedFlows(t *testing.T) {
	_, client, l := pair(t, "queue.demo")
	c, err := client.Dial(testCtx(t), "queue.demo") // accepted by the Host, never by the app
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, l.Close())
	c.SetReadDeadline(time.Now().Add(quick))
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err)
	require.False(t, isTimeoutErr(err), "a queued flow must end when its Listener closes, got %v", err)
	_, err = client.Dial(testCtx(t), "queue.demo")
	require.Error(t, err, "a closed Listener's service is withdrawn")
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
