package main

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
	"github.com/stretchr/testify/require"
)

// BenchmarkProxy puts `roam forward` + `roam serve` (a TCP leg at each
// end, a roam flow between) beside a direct TCP connection and beside
// roam's library API (the same flow with no TCP legs), on loopback, in
// the same run and interleaved, so that machine noise hits all three
// alike. Each round sends 4 MiB and waits for the server's one-byte
// acknowledgement of the last byte; the latency rounds send one byte and
// wait for its echo. Read the ratios:
//
//	go test -run '^$' -bench Proxy -benchtime 40x ./sal/cmd/roam
func BenchmarkProxy(b *testing.B) {
	const chunk = 4 << 20
	ctx := context.Background()

	// The server: a sink that acknowledges every chunk, and an echo.
	sink := func(c io.ReadWriter) {
		buf := make([]byte, 64<<10)
		var n int
		for {
			k, err := c.Read(buf)
			if n += k; n >= chunk {
				n -= chunk
				if _, werr := c.Write([]byte{1}); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	echo := func(c io.ReadWriter) {
		var b [1]byte
		for {
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return
			}
			if _, err := c.Write(b[:]); err != nil {
				return
			}
		}
	}
	tcpServer := func(serve func(io.ReadWriter)) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		b.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); serve(c) }()
			}
		}()
		return ln.Addr().String()
	}
	sinkAddr, echoAddr := tcpServer(sink), tcpServer(echo)

	// The library: two Hosts through the same kind of registry.
	url := testRegistry(b)
	r, err := resolve.Open(ctx, url)
	require.NoError(b, err)
	b.Cleanup(func() { r.(io.Closer).Close() })
	server, err := sal.NewHost(sal.Config{Resolver: r, ListenAddr: "127.0.0.1:0"})
	require.NoError(b, err)
	b.Cleanup(func() { server.Close() })
	client, err := sal.NewHost(sal.Config{Resolver: r, ListenAddr: "127.0.0.1:0"})
	require.NoError(b, err)
	b.Cleanup(func() { client.Close() })
	for name, serve := range map[string]func(io.ReadWriter){"sink.lib": sink, "echo.lib": echo} {
		l, err := server.Listen(ctx, name)
		require.NoError(b, err)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); serve(c) }()
			}
		}()
	}

	// The command: serve in front of each TCP server, forward to each.
	keys := b.TempDir()
	proxy := func(service, target string) string {
		s := runRoam(b, nil, "serve", "-resolver", url, "-key", filepath.Join(keys, service+".s.pem"), "-udp", "127.0.0.1:0", service, "tcp://"+target)
		s.line("roam serve: ")
		f := runRoam(b, nil, "forward", "-resolver", url, "-key", filepath.Join(keys, service+".f.pem"), "-udp", "127.0.0.1:0", service)
		return forwardAddr(f)
	}
	fwdSink, fwdEcho := proxy("sink.cmd", sinkAddr), proxy("echo.cmd", echoAddr)

	dialTCP := func(addr string) net.Conn {
		c, err := net.Dial("tcp", addr)
		require.NoError(b, err)
		b.Cleanup(func() { c.Close() })
		return c
	}
	dialLib := func(service string) net.Conn {
		c, err := client.Dial(ctx, service)
		require.NoError(b, err)
		b.Cleanup(func() { c.Close() })
		return c
	}
	lanes := []struct {
		name       string
		bulk, ping net.Conn
		bulkT      time.Duration
		pingT      time.Duration
	}{
		{name: "tcp", bulk: dialTCP(sinkAddr), ping: dialTCP(echoAddr)},
		{name: "lib", bulk: dialLib("sink.lib"), ping: dialLib("echo.lib")},
		{name: "fwd", bulk: dialTCP(fwdSink), ping: dialTCP(fwdEcho)},
	}

	payload := make([]byte, chunk)
	bulkRound := func(c net.Conn) time.Duration {
		start := time.Now()
		_, err := c.Write(payload)
		require.NoError(b, err)
		var ack [1]byte
		_, err = io.ReadFull(c, ack[:])
		require.NoError(b, err)
		return time.Since(start)
	}
	const pings = 20
	pingRound := func(c net.Conn) time.Duration {
		var p [1]byte
		start := time.Now()
		for range pings {
			_, err := c.Write(p[:])
			require.NoError(b, err)
			_, err = io.ReadFull(c, p[:])
			require.NoError(b, err)
		}
		return time.Since(start) / pings
	}
	for i := range lanes { // warm-up: windows grow, connections settle
		bulkRound(lanes[i].bulk)
		pingRound(lanes[i].ping)
	}

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range lanes { // a different lane first each round
			l := &lanes[(i+k)%len(lanes)]
			l.bulkT += bulkRound(l.bulk)
			l.pingT += pingRound(l.ping)
		}
	}
	b.StopTimer()
	mb := float64(chunk) * float64(b.N) / 1e6
	for _, l := range lanes {
		b.ReportMetric(mb/l.bulkT.Seconds(), l.name+"-MB/s")
		b.ReportMetric(float64(l.pingT.Microseconds())/float64(b.N), l.name+"-rtt-µs")
	}
	b.ReportMetric(lanes[1].bulkT.Seconds()/lanes[2].bulkT.Seconds(), "fwd/lib")
	b.ReportMetric(0, "ns/op")
}
