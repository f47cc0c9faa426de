package sal

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// quick bounds how long a bad-input error may take: generous, to catch
// hangs rather than measure speed.
const quick = 5 * time.Second

func TestDialBadInput(t *testing.T) {
	server, client, l := pair(t, "real.demo")
	defer l.Close()

	// A UDP port with nobody behind it: bound, then closed.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := dead.LocalAddr().(*net.UDPAddr).AddrPort()
	dead.Close()
	require.NoError(t, client.Table().Set(Rule{Service: "dead.demo", Action: ActionEndpoints,
		Endpoints: []resolve.Endpoint{{Addr: deadAddr}}}))
	require.NoError(t, client.Table().Set(Rule{Service: "nolistener.demo", Action: ActionEndpoints,
		Endpoints: []resolve.Endpoint{{Addr: server.LocalAddr()}}}))
	require.NoError(t, client.Table().Set(Rule{Service: "blocked", Action: ActionDrop}))

	for _, tc := range []struct {
		name    string
		service string
		timeout time.Duration
		is      error
	}{
		{"malformed ID", "bad_name.demo", quick, ErrInvalidServiceID},
		{"empty ID", "", quick, ErrInvalidServiceID},
		{"unknown service", "nobody.demo", quick, resolve.ErrNotFound},
		{"no listener at the reached host", "nolistener.demo", quick, ErrNoListener},
		{"dropped by rule", "x.blocked", quick, ErrDropped},
		{"unreachable endpoint", "dead.demo", 300 * time.Millisecond, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			c, err := client.Dial(ctx, tc.service)
			require.Nil(t, c)
			require.ErrorIs(t, err, tc.is)
			var op *OpError
			require.ErrorAs(t, err, &op)
			require.Less(t, time.Since(start), tc.timeout+quick, "error must come promptly")
		})
	}

	t.Run("unreachable endpoint reports a timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := client.Dial(ctx, "dead.demo")
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		require.True(t, ne.Timeout())
	})
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := client.Dial(ctx, "real.demo")
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("bad network", func(t *testing.T) {
		_, err := client.DialContext(testCtx(t), "udp", "real.demo:80")
		require.ErrorIs(t, err, ErrBadNetwork)
	})
}

func TestListenBadInput(t *testing.T) {
	h := newHost(t, Config{Resolver: resolve.NewMemory()})
	_, err := h.Listen(testCtx(t), "-bad.demo")
	require.ErrorIs(t, err, ErrInvalidServiceID)
	l, err := h.Listen(testCtx(t), "once.demo")
	require.NoError(t, err)
	_, err = h.Listen(testCtx(t), "ONCE.demo.")
	require.ErrorIs(t, err, ErrAlreadyListening)
	require.NoError(t, l.Close())
	l, err = h.Listen(testCtx(t), "once.demo") // free again after Close
	require.NoError(t, err)
	require.NoError(t, l.Close())
	_, err = l.AcceptContext(testCtx(t))
	require.ErrorIs(t, err, net.ErrClosed)
}

func TestNewHostBadConfig(t *testing.T) {
	t.Setenv(resolve.EnvResolver, "")
	_, err := NewHost(Config{})
	require.ErrorIs(t, err, ErrNoResolver)
	_, err = NewHost(Config{Resolver: resolve.NewMemory(), ListenAddr: "not an address"})
	require.Error(t, err)
}

func TestFailoverToNextEndpoint(t *testing.T) {
	server, client, l := pair(t, "fo.demo")
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := dead.LocalAddr().(*net.UDPAddr).AddrPort()
	dead.Close()
	// Long enough for a loaded machine to reach the live endpoint in time,
	// short enough that the dead one costs little.
	client.cfg.EndpointTimeout = 500 * time.Millisecond
	require.NoError(t, client.Table().Set(Rule{Service: "fo.demo", Action: ActionEndpoints,
		Endpoints: []resolve.Endpoint{{Addr: deadAddr}, {Addr: server.LocalAddr()}}}))
	// Whichever endpoint the spread starts at, every dial reaches the live one.
	for range 4 {
		c := pingPong(t, client, l, "fo.demo")
		require.Equal(t, server.LocalAddr(), c.RemoteAddr().(Addr).Endpoint)
	}
}

func TestSpreadAcrossEndpoints(t *testing.T) {
	mem := resolve.NewMemory()
	a := newHost(t, Config{Resolver: mem})
	b := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: mem})
	la, err := a.Listen(testCtx(t), "spread.demo")
	require.NoError(t, err)
	lb, err := b.Listen(testCtx(t), "spread.demo")
	require.NoError(t, err)
	for _, l := range []*Listener{la, lb} {
		go func() {
			for {
				c, err := l.AcceptContext(testCtx(t))
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	seen := map[netip.AddrPort]int{}
	for range 6 {
		c, err := client.Dial(testCtx(t), "spread.demo")
		require.NoError(t, err)
		seen[c.RemoteAddr().(Addr).Endpoint]++
		c.Close()
	}
	require.Equal(t, 3, seen[a.LocalAddr()])
	require.Equal(t, 3, seen[b.LocalAddr()])
}

// rawQUICServer is a QUIC server that speaks roam's ALPN but not its
// protocol: it answers every stream with garbage.
func rawQUICServer(t *testing.T, reply []byte) netip.AddrPort {
	id, err := newIdentity(nil)
	require.NoError(t, err)
	ln, err := quic.ListenAddr("127.0.0.1:0", id.serverTLS(), nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				for {
					s, err := c.AcceptStream(ctx)
					if err != nil {
						return
					}
					s.Write(reply)
					s.Close()
				}
			}()
		}
	}()
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
	return ln.Addr().(*net.UDPAddr).AddrPort()
}

func TestGarbageFromPeer(t *testing.T) {
	for name, reply := range map[string][]byte{
		"garbage":    []byte("HTTP/1.1 200 OK\r\n\r\n"),
		"bad type":   {1, 0x01, 0, 0, 0},
		"truncated":  {1},
		"no reply":   nil,
		"bad status": {1, 0x81, 99, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			addr := rawQUICServer(t, reply)
			client := newHost(t, Config{Resolver: resolve.NewStatic(map[string][]netip.AddrPort{"evil.demo": {addr}})})
			ctx, cancel := context.WithTimeout(context.Background(), quick)
			defer cancel()
			// The first flow on a connection is optimistic, so the error
			// comes from Read; a further flow waits for its Reply in Dial.
			c, err := client.Dial(ctx, "evil.demo")
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Read(make([]byte, 1))
			require.ErrorIs(t, err, ErrProtocol)
			var op *OpError
			require.ErrorAs(t, err, &op)
			_, err = client.Dial(ctx, "evil.demo")
			require.ErrorIs(t, err, ErrProtocol)
		})
	}
}

func TestGarbageToListener(t *testing.T) {
	server, client, l := pair(t, "victim.demo")
	id, err := newIdentity(nil)
	require.NoError(t, err)
	tr := &quic.Transport{Conn: mustListenUDP(t)}
	defer tr.Close()
	qc, err := tr.Dial(testCtx(t), net.UDPAddrFromAddrPort(server.LocalAddr()), id.clientTLS(""), nil)
	require.NoError(t, err)
	defer qc.CloseWithError(0, "")

	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 'a', '_', 'b', 0, 0}, // bad service ID
		{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},                      // empty service
	} {
		s, err := qc.OpenStreamSync(testCtx(t))
		require.NoError(t, err)
		_, err = s.Write(garbage)
		require.NoError(t, err)
		s.SetReadDeadline(time.Now().Add(quick))
		buf := make([]byte, 64)
		n, _ := s.Read(buf)
		// The listener answers "bad request" (status 3) and ends the stream.
		require.GreaterOrEqual(t, n, 3)
		require.Equal(t, byte(3), buf[2])
	}
	// A silent stream is dropped after OpenTimeout; here we only check
	// the listener still serves honest dialers after all that.
	pingPong(t, client, l, "victim.demo")
	select {
	case c := <-l.queue:
		t.Fatalf("garbage was delivered as a flow: %v", c.FlowID())
	default:
	}
}

func TestSilentStreamTimesOut(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, OpenTimeout: 100 * time.Millisecond})
	_, err := server.Listen(testCtx(t), "silent.demo")
	require.NoError(t, err)
	id, err := newIdentity(nil)
	require.NoError(t, err)
	tr := &quic.Transport{Conn: mustListenUDP(t)}
	defer tr.Close()
	qc, err := tr.Dial(testCtx(t), net.UDPAddrFromAddrPort(server.LocalAddr()), id.clientTLS(""), nil)
	require.NoError(t, err)
	defer qc.CloseWithError(0, "")
	s, err := qc.OpenStreamSync(testCtx(t))
	require.NoError(t, err)
	_, err = s.Write([]byte{1}) // a header that never completes
	require.NoError(t, err)
	s.SetReadDeadline(time.Now().Add(quick))
	_, err = s.Read(make([]byte, 1))
	var se *quic.StreamError
	require.True(t, errors.As(err, &se), "the listener must reset a stream whose header never comes, got %v", err)
}

func TestWrongALPNIsRefused(t *testing.T) {
	server, _, _ := pair(t, "alpn.demo")
	id, err := newIdentity(nil)
	require.NoError(t, err)
	conf := id.clientTLS("")
	conf.NextProtos = []string{"h3"}
	ctx, cancel := context.WithTimeout(context.Background(), quick)
	defer cancel()
	tr := &quic.Transport{Conn: mustListenUDP(t)}
	defer tr.Close()
	_, err = tr.Dial(ctx, net.UDPAddrFromAddrPort(server.LocalAddr()), conf, nil)
	require.Error(t, err)
	var te *quic.TransportError
	require.ErrorAs(t, err, &te)
}

func mustListenUDP(t *testing.T) net.PacketConn {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}
