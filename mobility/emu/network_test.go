package emu

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	srvAddr = netip.MustParseAddrPort("10.0.0.1:443")
	cliAddr = netip.MustParseAddrPort("10.0.1.2:5000")
)

func listen(t *testing.T, nw *Network, addr netip.AddrPort) *PacketConn {
	t.Helper()
	c, err := nw.Listen(addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *PacketConn) (string, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	require.NoError(t, err)
	return string(buf[:n]), from
}

func TestNetworkDirect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork(1)
		defer nw.Close()
		a, b := listen(t, nw, srvAddr), listen(t, nw, cliAddr)
		start := time.Now()
		_, err := b.WriteTo([]byte("hello"), net.UDPAddrFromAddrPort(srvAddr))
		require.NoError(t, err)
		buf := make([]byte, 3)
		n, from, err := a.ReadFrom(buf)
		require.NoError(t, err)
		require.Equal(t, "hel", string(buf[:n]), "the rest of a datagram that does not fit is lost")
		require.Equal(t, net.UDPAddrFromAddrPort(cliAddr), from)
		require.Zero(t, time.Since(start), "an unshaped network delivers at once")

		// Nobody listens: the datagram is gone, and the write succeeds.
		_, err = b.WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("10.9.9.9:1"))
		require.NoError(t, err)
	})
}

func TestNetworkListenPacket(t *testing.T) {
	nw := NewNetwork(1)
	defer nw.Close()
	ctx := context.Background()

	c1, err := nw.ListenPacket(ctx, "udp", "127.0.0.1:0")
	require.NoError(t, err)
	c2, err := nw.ListenPacket(ctx, "udp4", "127.0.0.1:0")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:49152", c1.LocalAddr().String())
	require.Equal(t, "127.0.0.1:49153", c2.LocalAddr().String())

	_, err = nw.ListenPacket(ctx, "udp", "127.0.0.1:49152")
	require.ErrorIs(t, err, syscall.EADDRINUSE)

	wild, err := nw.ListenPacket(ctx, "udp", ":0")
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0:49154", wild.LocalAddr().String(), "a wildcard takes the port on every address")
	v6, err := nw.ListenPacket(ctx, "udp6", "localhost:7")
	require.NoError(t, err)
	require.Equal(t, "[::1]:7", v6.LocalAddr().String())

	for _, bad := range [][2]string{
		{"tcp", ":0"}, {"udp", "nohost"}, {"udp", "example.com:1"}, {"udp", "1.2.3.4:99999"},
		{"udp4", "[::1]:0"}, {"udp6", "1.2.3.4:0"}, {"udp", "[fe80::1%eth0]:0"},
	} {
		_, err := nw.ListenPacket(ctx, bad[0], bad[1])
		var op *net.OpError
		require.ErrorAs(t, err, &op, "%v", bad)
	}

	// A socket bound to every address gets what is sent to loopback, and
	// speaks from loopback.
	_, err = c1.WriteTo([]byte("hi"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 49154})
	require.NoError(t, err)
	buf := make([]byte, 10)
	n, from, err := wild.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, "hi", string(buf[:n]))
	require.Equal(t, "127.0.0.1:49152", from.String())
	_, err = wild.WriteTo([]byte("back"), from)
	require.NoError(t, err)
	n, from, err = c1.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, "back", string(buf[:n]))
	require.Equal(t, "127.0.0.1:49154", from.String())

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = nw.ListenPacket(cctx, "udp", ":0")
	require.ErrorIs(t, err, context.Canceled)

	require.NoError(t, nw.Close())
	_, err = nw.Listen(srvAddr)
	require.ErrorIs(t, err, ErrNetworkClosed)
	_, err = c2.WriteTo([]byte("x"), c1.LocalAddr())
	require.ErrorIs(t, err, net.ErrClosed)
}

func TestConnDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork(1)
		defer nw.Close()
		c := listen(t, nw, srvAddr)
		buf := make([]byte, 10)

		start := time.Now()
		require.NoError(t, c.SetReadDeadline(start.Add(time.Second)))
		_, _, err := c.ReadFrom(buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		require.True(t, ne.Timeout())
		require.Equal(t, time.Second, time.Since(start))

		// Moving the deadline wakes a blocked reader, which then honours
		// the new one.
		require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Hour)))
		start = time.Now()
		go func() {
			time.Sleep(time.Minute)
			c.SetReadDeadline(time.Now().Add(time.Second))
		}()
		_, _, err = c.ReadFrom(buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.Equal(t, time.Minute+time.Second, time.Since(start))

		// A past deadline fails at once, even with data waiting.
		require.NoError(t, c.SetDeadline(time.Now().Add(-time.Second)))
		_, err = c.WriteTo([]byte("x"), c.LocalAddr())
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.NoError(t, c.SetDeadline(time.Time{}))
		_, err = c.WriteTo([]byte("x"), c.LocalAddr())
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now()))
		_, _, err = c.ReadFrom(buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.NoError(t, c.SetReadDeadline(time.Time{}))
		_, _, err = c.ReadFrom(buf)
		require.NoError(t, err)

		// Setting a deadline wakes a reader that had none, as quic-go's
		// Transport.Close relies on.
		go func() {
			time.Sleep(time.Second)
			c.SetReadDeadline(time.Now())
		}()
		_, _, err = c.ReadFrom(buf)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	})
}

func TestConnCloseUnblocksReaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork(1)
		defer nw.Close()
		c := listen(t, nw, srvAddr)
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for range 3 {
			wg.Go(func() {
				_, _, err := c.ReadFrom(make([]byte, 10))
				errs <- err
			})
		}
		synctest.Wait()
		require.NoError(t, c.Close())
		wg.Wait()
		close(errs)
		for err := range errs {
			require.ErrorIs(t, err, net.ErrClosed)
		}
		require.NoError(t, c.Close(), "twice")
		_, err := nw.Listen(srvAddr)
		require.NoError(t, err, "the address is free again")
	})
}

func TestConnReadBuffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork(1)
		defer nw.Close()
		a, b := listen(t, nw, srvAddr), listen(t, nw, cliAddr)
		require.NoError(t, a.SetReadBuffer(2500))
		for range 5 {
			_, err := b.WriteTo(make([]byte, 1000), a.LocalAddr())
			require.NoError(t, err)
		}
		require.Equal(t, uint64(3), a.Overflows())
		_, err := b.WriteTo(make([]byte, maxDatagram+1), a.LocalAddr())
		require.Error(t, err)
		_, err = b.WriteTo(make([]byte, 1), nil)
		require.Error(t, err)
	})
}

func TestConnConcurrentReaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork(1)
		defer nw.Close()
		a, b := listen(t, nw, srvAddr), listen(t, nw, cliAddr)
		var mu sync.Mutex
		got := 0
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				buf := make([]byte, 100)
				for {
					if _, _, err := a.ReadFrom(buf); err != nil {
						return
					}
					mu.Lock()
					got++
					mu.Unlock()
				}
			})
		}
		for range 1000 {
			_, err := b.WriteTo([]byte("x"), a.LocalAddr())
			require.NoError(t, err)
		}
		synctest.Wait()
		a.Close()
		wg.Wait()
		require.Equal(t, 1000, got)
	})
}
