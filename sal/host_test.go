package sal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// newHost returns a Host on loopback that is closed when the test ends.
func newHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	h, err := NewHost(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

// pair returns a listening Host serving service and a dialing Host, both
// sharing one in-memory resolver.
func pair(t testing.TB, service string) (server, client *Host, l *Listener) {
	t.Helper()
	mem := resolve.NewMemory()
	server = newHost(t, Config{Resolver: mem})
	client = newHost(t, Config{Resolver: mem})
	l, err := server.Listen(context.Background(), service)
	require.NoError(t, err)
	return server, client, l
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// accept accepts one flow in the background.
func accept(t testing.TB, l *Listener) <-chan *Conn {
	ch := make(chan *Conn, 1)
	go func() {
		c, err := l.AcceptContext(testCtx(t))
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

func TestEchoChecksummed(t *testing.T) {
	_, client, l := pair(t, "echo.demo")
	go func() {
		c, err := l.AcceptContext(testCtx(t))
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo until the dialer half-closes
	}()

	c, err := client.Dial(testCtx(t), "echo.demo")
	require.NoError(t, err)
	defer c.Close()
	require.True(t, c.Authenticated(), "memory registrations pin the provider's key")

	want := randomBytes(8<<20, 1)
	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.CloseWrite()
		}
		writeErr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	require.NoError(t, err)
	require.NoError(t, <-writeErr)
	require.Equal(t, int64(len(want)), n)
	require.Equal(t, sha256.Sum256(want), [32]byte(h.Sum(nil)))
}

func TestAddrs(t *testing.T) {
	server, client, l := pair(t, "Echo.Demo")
	serverPort := strconv.Itoa(int(server.LocalAddr().Port()))
	clientPort := strconv.Itoa(int(client.LocalAddr().Port()))
	require.Equal(t, "echo.demo:"+serverPort, l.Addr().String())
	require.Equal(t, "sal", l.Addr().Network())
	acc := accept(t, l)
	c, err := client.Dial(testCtx(t), "echo.demo")
	require.NoError(t, err)
	defer c.Close()
	sc := <-acc
	require.NotNil(t, sc)
	defer sc.Close()

	require.Equal(t, "sal", c.RemoteAddr().Network())
	require.Equal(t, "echo.demo:"+serverPort, c.RemoteAddr().String())
	require.Equal(t, MustParseServiceID("echo.demo"), c.RemoteAddr().(Addr).Service)
	require.Equal(t, server.LocalAddr(), c.RemoteAddr().(Addr).Endpoint)
	require.Equal(t, "rk--"+client.Key().String()+":"+clientPort, c.LocalAddr().String())
	// The listening side names the dialer by its key.
	require.Equal(t, "rk--"+client.Key().String()+":"+clientPort, sc.RemoteAddr().String())
	require.Equal(t, client.Key(), sc.PeerKey())
	require.Equal(t, server.Key(), c.PeerKey())
	require.Equal(t, "echo.demo:"+serverPort, sc.LocalAddr().String())
	require.Equal(t, c.FlowID(), sc.FlowID())
	require.True(t, sc.Authenticated())
}

func TestZeroConfigInProcess(t *testing.T) {
	// Default ListenAddr (0.0.0.0:0): the registered endpoint is
	// unspecified, which a dialer takes to mean this machine (loopback).
	mem := resolve.NewMemory()
	a, err := NewHost(Config{Resolver: mem})
	require.NoError(t, err)
	defer a.Close()
	b, err := NewHost(Config{Resolver: mem})
	require.NoError(t, err)
	defer b.Close()
	require.True(t, a.LocalAddr().Addr().IsUnspecified())

	l, err := a.Listen(testCtx(t), "zero.demo")
	require.NoError(t, err)
	defer l.Close()
	pingPong(t, b, l, "zero.demo")
}

// pingPong dials service from d, accepts on l and exchanges a message each way.
func pingPong(t *testing.T, d *Host, l *Listener, service string) *Conn {
	t.Helper()
	acc := accept(t, l)
	c, err := d.Dial(testCtx(t), service)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = c.Write([]byte("ping"))
	require.NoError(t, err)
	sc := <-acc
	require.NotNil(t, sc)
	defer sc.Close()
	buf := make([]byte, 4)
	_, err = io.ReadFull(sc, buf)
	require.NoError(t, err)
	require.Equal(t, "ping", string(buf))
	_, err = sc.Write([]byte("pong"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, "pong", string(buf))
	return c
}

func TestStaticResolverToLocalAddr(t *testing.T) {
	server := newHost(t, Config{Resolver: resolve.NewMemory()})
	l, err := server.Listen(testCtx(t), "static.demo")
	require.NoError(t, err)
	client := newHost(t, Config{
		ListenAddr: "127.0.0.1:0",
		Resolver:   resolve.NewStatic(map[string][]netip.AddrPort{"static.demo": {server.LocalAddr()}}),
	})
	c := pingPong(t, client, l, "static.demo")
	require.False(t, c.Authenticated(), "nothing pinned the key: encrypted, not authenticated")
}

func TestAuthentication(t *testing.T) {
	server := newHost(t, Config{Resolver: resolve.NewMemory()})
	l, err := server.Listen(testCtx(t), "auth.demo")
	require.NoError(t, err)
	static := resolve.NewStatic(map[string][]netip.AddrPort{"auth.demo": {server.LocalAddr()}})

	t.Run("self-certifying ID authenticates over an unpinned resolver", func(t *testing.T) {
		client := newHost(t, Config{Resolver: static, RequireAuthentication: true})
		id, err := server.ServiceID("auth.demo")
		require.NoError(t, err)
		c := pingPong(t, client, l, id.String())
		require.True(t, c.Authenticated())
	})
	t.Run("RequireAuthentication refuses unpinned dials", func(t *testing.T) {
		client := newHost(t, Config{Resolver: static, RequireAuthentication: true})
		_, err := client.Dial(testCtx(t), "auth.demo")
		require.ErrorIs(t, err, ErrUnauthenticated)
	})
	t.Run("wrong key in ID", func(t *testing.T) {
		client := newHost(t, Config{Resolver: static})
		other := newHost(t, Config{Resolver: static})
		id, err := other.ServiceID("auth.demo") // names a key the server does not hold
		require.NoError(t, err)
		_, err = client.Dial(testCtx(t), id.String())
		require.ErrorIs(t, err, ErrKeyMismatch)
		var op *OpError
		require.ErrorAs(t, err, &op)
		require.Equal(t, "dial", op.Op)
	})
	t.Run("wrong key pinned by resolver", func(t *testing.T) {
		mem := resolve.NewMemory()
		other := newHost(t, Config{Resolver: mem})
		reg, err := mem.Register(testCtx(t), "auth.demo", resolve.Endpoint{Addr: server.LocalAddr(), Key: other.Key()})
		require.NoError(t, err)
		defer reg.Close()
		client := newHost(t, Config{Resolver: mem})
		_, err = client.Dial(testCtx(t), "auth.demo")
		require.ErrorIs(t, err, ErrKeyMismatch)
	})
	t.Run("listen on a key the host does not hold", func(t *testing.T) {
		other := newHost(t, Config{Resolver: static})
		id, _ := other.ServiceID("auth.demo")
		_, err := server.Listen(testCtx(t), id.String())
		require.ErrorIs(t, err, ErrKeyMismatch)
	})
}

func TestFlowsShareOneConnection(t *testing.T) {
	_, client, l := pair(t, "share.demo")
	var conns []*Conn
	for range 5 {
		conns = append(conns, pingPong(t, client, l, "share.demo"))
	}
	client.mu.Lock()
	require.Len(t, client.peers, 1)
	client.mu.Unlock()
	for _, c := range conns[1:] {
		require.Same(t, conns[0].quicConn(), c.quicConn())
	}
}

func TestIdleConnectionCloses(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: mem, IdleConnTimeout: 50 * time.Millisecond})
	l, err := server.Listen(testCtx(t), "idle.demo")
	require.NoError(t, err)
	c := pingPong(t, client, l, "idle.demo")
	qc := c.quicConn()
	require.NoError(t, c.Close())
	select {
	case <-qc.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection stayed open with no flow")
	}
	// A later flow dials a fresh connection.
	c2 := pingPong(t, client, l, "idle.demo")
	require.NotSame(t, qc, c2.quicConn())
}

func TestCloseGivesEOFAndHalfClose(t *testing.T) {
	_, client, l := pair(t, "half.demo")
	acc := accept(t, l)
	c, err := client.Dial(testCtx(t), "half.demo")
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("request"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	sc := <-acc
	require.NotNil(t, sc)
	got, err := io.ReadAll(sc) // EOF after the request
	require.NoError(t, err)
	require.Equal(t, "request", string(got))
	_, err = sc.Write([]byte("response")) // the other direction still works
	require.NoError(t, err)
	require.NoError(t, sc.Close())
	got, err = io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "response", string(got))

	// After Close: net.ErrClosed, for every operation.
	_, err = sc.Read(make([]byte, 1))
	require.ErrorIs(t, err, net.ErrClosed)
	_, err = sc.Write([]byte("x"))
	require.ErrorIs(t, err, net.ErrClosed)
	require.ErrorIs(t, sc.Close(), net.ErrClosed)
}

func TestDeadlineErrors(t *testing.T) {
	_, client, l := pair(t, "deadline.demo")
	acc := accept(t, l)
	c, err := client.Dial(testCtx(t), "deadline.demo")
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	sc := <-acc
	require.NotNil(t, sc)
	defer sc.Close()

	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout())
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

func TestHostCloseEndsFlows(t *testing.T) {
	server, client, l := pair(t, "close.demo")
	acc := accept(t, l)
	c, err := client.Dial(testCtx(t), "close.demo")
	require.NoError(t, err)
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	sc := <-acc
	require.NotNil(t, sc)

	readErr := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(sc)
		readErr <- err
	}()
	require.NoError(t, client.Close())
	select {
	case err := <-readErr:
		require.Error(t, err, "the peer's flow must end with an error, not a clean EOF")
	case <-time.After(10 * time.Second):
		t.Fatal("flow outlived its Host")
	}
	_, err = c.Write([]byte("x"))
	require.Error(t, err)
	_, err = client.Dial(testCtx(t), "close.demo")
	require.ErrorIs(t, err, net.ErrClosed)
	_, err = client.Listen(testCtx(t), "other.demo")
	require.ErrorIs(t, err, net.ErrClosed)
	require.NoError(t, client.Close(), "Close is idempotent")
	_ = server
}

func TestConcurrentDials(t *testing.T) {
	_, client, l := pair(t, "many.demo")
	const n = 64
	go func() {
		for {
			c, err := l.AcceptContext(testCtx(t))
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.Dial(testCtx(t), "many.demo")
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := randomBytes(4096, uint64(i))
			go func() { c.Write(msg); c.CloseWrite() }()
			got, err := io.ReadAll(c)
			if err == nil && !bytes.Equal(got, msg) {
				err = errors.New("echo mismatch")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	client.mu.Lock()
	require.Len(t, client.peers, 1, "concurrent dials to one peer share one connection")
	client.mu.Unlock()
}
