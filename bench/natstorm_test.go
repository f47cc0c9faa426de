package main

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
	"github.com/stretchr/testify/require"
)

// BenchmarkNATStormLoopback measures issue 14's NAT target on loopback:
// one roam flow sends 64 MiB to a server behind a relay that adds no delay,
// once calm and once while the relay's NAT forgets its mappings 50 times,
// 50 ms apart, from the first byte on (a NAT rebinding tells the client
// nothing: only its silence watcher notices). It reports both times and
// their ratio (target: the storm at most 2x calm), and checks every byte
// against the pattern.
//
//	go test -run=NONE -bench=NATStormLoopback -benchtime=3x ./bench
func BenchmarkNATStormLoopback(b *testing.B) {
	const size = 64 << 20
	var calm, storm time.Duration
	var replaced atomic.Int64
	count := func(e sal.Event) {
		if e.Kind == sal.EventReplaced {
			replaced.Add(1)
		}
	}
	for b.Loop() {
		calm += natStormRun(b, size, 0, nil)
		storm += natStormRun(b, size, 50, count)
	}
	n := time.Duration(b.N)
	b.ReportMetric((calm / n).Seconds(), "calm-s")
	b.ReportMetric((storm / n).Seconds(), "storm-s")
	b.ReportMetric(float64(storm)/float64(calm), "x-calm")
	b.ReportMetric(float64(replaced.Load())/float64(b.N), "replaced/op")
}

// natStormRun sends size bytes over a fresh roam flow through a relay
// with no delay, rebinding its NAT rebinds times 50 ms apart from the
// start, and returns how long the receiver took to read them all.
func natStormRun(b testing.TB, size, rebinds int, onEvent func(sal.Event)) time.Duration {
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	socks := &relayedUDP{link: emu.LinkConfig{}}
	defer socks.Close()
	mem := resolve.NewMemory()
	server, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: addrString(blockServer), ListenPacket: socks.ListenPacket})
	require.NoError(b, err)
	defer server.Close()
	client, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: addrString(blockClient), OnEvent: onEvent})
	require.NoError(b, err)
	defer client.Close()
	l, err := server.Listen(ctx, "nat.bench")
	require.NoError(b, err)
	c, err := client.Dial(ctx, "nat.bench")
	require.NoError(b, err)
	sc, err := l.AcceptContext(ctx)
	require.NoError(b, err)

	sent := make(chan error, 1)
	start := time.Now()
	go func() {
		buf := make([]byte, 64<<10)
		for off := 0; off < size; off += len(buf) {
			fillPattern(buf, uint64(off))
			if _, err := c.Write(buf); err != nil {
				sent <- err
				return
			}
		}
		sent <- c.CloseWrite()
	}()
	for i := range rebinds {
		t := time.AfterFunc(time.Duration(i)*50*time.Millisecond, func() { socks.current().Rebind() })
		defer t.Stop()
	}
	var v verifier
	buf := make([]byte, 64<<10)
	got := 0
	for {
		n, err := sc.Read(buf)
		v.feed(buf[:n])
		got += n
		if err == io.EOF {
			break
		}
		require.NoError(b, err)
	}
	took := time.Since(start)
	require.NoError(b, <-sent)
	require.Equal(b, size, got)
	require.Zero(b, v.lost+v.dup+v.corrupt, "bytes lost, duplicated or corrupt")
	c.Close()
	sc.Close()
	return took
}
