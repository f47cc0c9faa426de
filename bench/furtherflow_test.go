package main

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
	"github.com/stretchr/testify/require"
)

// BenchmarkFurtherFlowEmulated measures a further flow to a peer that
// already has a connection, over the emulated path (20 ms RTT; see
// emulated_test.go), where round trips, not CPU, set the time:
//
//   - roam-dial: Host.Dial, which costs one SAL round trip (the header
//     out, the listener's answer back). Target: at most 1 RTT.
//   - roam-echo, quic-echo, tcp-echo: from asking for the flow to the
//     first byte echoed back, which is what an application waits for. A
//     quic-go stream opens without a round trip of its own, so it takes
//     1 RTT; TCP needs its handshake first, 2 RTT; roam, its dial and
//     then the echo, 2 RTT.
//
// The systems take turns in rotating order. Each figure is the median.
func BenchmarkFurtherFlowEmulated(b *testing.B) {
	ctx := b.Context()
	var wg sync.WaitGroup
	b.Cleanup(wg.Wait)
	echo := func(c io.ReadWriteCloser) {
		io.Copy(c, c)
		c.Close()
	}

	socks := &relayedUDP{link: emuLink}
	b.Cleanup(socks.Close)
	mem := resolve.NewMemory()
	server := newHost(b, sal.Config{Resolver: mem, ListenAddr: addrString(blockServer), ListenPacket: socks.ListenPacket})
	client := newHost(b, sal.Config{Resolver: mem, ListenAddr: addrString(blockClient)})
	l, err := server.Listen(ctx, "echo.bench")
	require.NoError(b, err)
	wg.Go(func() {
		for {
			c, err := l.AcceptContext(ctx)
			if err != nil {
				return
			}
			wg.Go(func() { echo(c) })
		}
	})

	serverTLS, clientTLS := benchTLS(b, false)
	pc, err := socks.listen()
	require.NoError(b, err)
	str := &quic.Transport{Conn: pc}
	b.Cleanup(func() { str.Close(); pc.Close() })
	ln, err := str.Listen(serverTLS, nil)
	require.NoError(b, err)
	wg.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				for {
					st, err := c.AcceptStream(ctx)
					if err != nil {
						return
					}
					wg.Go(func() { echo(st) })
				}
			})
		}
	})
	uc := listenUDP(b, blockClient)
	ctr := &quic.Transport{Conn: uc}
	b.Cleanup(func() { ctr.Close(); uc.Close() })
	qc, err := ctr.Dial(ctx, pc.LocalAddr(), clientTLS, nil)
	require.NoError(b, err)
	b.Cleanup(func() { qc.CloseWithError(0, "") })

	tln, err := net.Listen("tcp", addrString(blockServer))
	require.NoError(b, err)
	b.Cleanup(func() { tln.Close() })
	wg.Go(func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { echo(c) })
		}
	})
	tpath, err := newTCPPath(tln.Addr().String(), fixedTCPLink())
	require.NoError(b, err)
	b.Cleanup(tpath.Close)

	var roamDial, roamEcho, quicEcho, tcpEcho []time.Duration
	roundTrip := func(c io.ReadWriter) {
		var one [1]byte
		_, err := c.Write(one[:])
		require.NoError(b, err)
		_, err = io.ReadFull(c, one[:])
		require.NoError(b, err)
	}
	tries := []func(){
		func() {
			start := time.Now()
			c, err := client.Dial(ctx, "echo.bench")
			require.NoError(b, err)
			roamDial = append(roamDial, time.Since(start))
			roundTrip(c)
			roamEcho = append(roamEcho, time.Since(start))
			c.Close()
		},
		func() {
			start := time.Now()
			st, err := qc.OpenStreamSync(ctx)
			require.NoError(b, err)
			roundTrip(st)
			quicEcho = append(quicEcho, time.Since(start))
			st.Close()
		},
		func() {
			start := time.Now()
			c, err := net.Dial("tcp", tpath.Addr().String())
			require.NoError(b, err)
			roundTrip(c)
			tcpEcho = append(tcpEcho, time.Since(start))
			c.Close()
		},
	}

	// The connections exist, and have carried a flow, before the clock
	// starts.
	first, err := client.Dial(ctx, "echo.bench")
	require.NoError(b, err)
	defer first.Close()
	roundTrip(first)
	st, err := qc.OpenStreamSync(context.Background())
	require.NoError(b, err)
	roundTrip(st)
	st.Close()

	b.ResetTimer()
	for i := range b.N {
		for j := range tries {
			tries[(i+j)%len(tries)]()
		}
	}
	b.StopTimer()
	for _, f := range []struct {
		name string
		ds   []time.Duration
	}{{"roam-dial", roamDial}, {"roam-echo", roamEcho}, {"quic-echo", quicEcho}, {"tcp-echo", tcpEcho}} {
		p50 := percentile(f.ds, .5)
		b.ReportMetric(ms(p50), f.name+"-ms")
		b.ReportMetric(rtts(p50), f.name+"-RTTs")
	}
	b.ReportMetric(ms(first.Stats().SmoothedRTT), "roam-srtt-ms")
	b.ReportMetric(0, "ns/op")
}
