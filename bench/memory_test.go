package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
	"github.com/stretchr/testify/require"
)

// BenchmarkIdleFlowMemory opens N flows between two ends in this process
// and reports the Go heap each one costs, both ends counted, beside N raw
// quic-go streams on one connection and N TCP connections measured in the
// same run. Two states:
//
//   - idle: one byte went each way and was read; what a quiet flow of a
//     fleet holds between messages.
//   - unread256: the dialer wrote 256 bytes the listener has not read yet;
//     a telemetry message in flight.
//
// Read roam/quic: the target is at most 2x for idle and 2.5x for unread256.
// Stacks are not heap: no system here keeps a goroutine per idle flow.
func BenchmarkIdleFlowMemory(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, state := range []flowMemState{memIdle, memUnread256} {
			b.Run(fmt.Sprintf("flows=%d/%s", n, state), func(b *testing.B) {
				// A TCP connection is a descriptor at each end.
				withTCP := raiseFileLimit(uint64(2*n + 1024))
				if !withTCP {
					b.Logf("no TCP lane: the open-file limit is under %d", 2*n+1024)
				}
				var roam, quicB, tcp float64
				for range b.N {
					// Interleaved, so that the heap's drift hits all alike.
					roam += heapPerFlow(b, n, func(tb testing.TB, m *meter) func() { return openRoamFlows(tb, m, n, state) })
					quicB += heapPerFlow(b, n, func(tb testing.TB, m *meter) func() { return openQUICStreams(tb, m, n, state) })
					if withTCP {
						tcp += heapPerFlow(b, n, func(tb testing.TB, m *meter) func() { return openTCPConns(tb, m, n, state) })
					}
				}
				runs := float64(b.N)
				b.ReportMetric(roam/runs, "roam-B/flow")
				b.ReportMetric(quicB/runs, "quic-B/flow")
				if withTCP {
					b.ReportMetric(tcp/runs, "tcp-B/flow")
				}
				b.ReportMetric(roam/quicB, "roam/quic")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

type flowMemState uint8

const (
	memIdle flowMemState = iota
	memUnread256
)

func (s flowMemState) String() string { return [...]string{"idle", "unread256"}[s] }

// heapPerFlow measures the heap that open holds per flow. open sets up
// its two ends, tells m once they are up (their fixed cost is not the
// flows'), opens n flows in the state measured, tells m again, and
// returns a function that closes everything.
func heapPerFlow(b *testing.B, n int, open func(testing.TB, *meter) func()) float64 {
	b.StopTimer()
	defer b.StartTimer()
	var m meter
	open(b, &m)()
	return float64(int64(m.after)-int64(m.before)) / float64(n)
}

type meter struct{ before, after uint64 }

func (m *meter) endsUp()  { m.before = settledHeap() }
func (m *meter) flowsUp() { m.after = settledHeap() }

// settledHeap is the live heap once the acknowledgements and timers that
// follow the last write have run.
func settledHeap() uint64 {
	time.Sleep(100 * time.Millisecond)
	return heapInUse()
}

func openRoamFlows(tb testing.TB, m *meter, n int, state flowMemState) func() {
	ctx := context.Background()
	mem := resolve.NewMemory()
	cfg := sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0", MaxFlowsPerConn: n + 2, Backlog: n + 2, QUIC: unreadQUICConf(n)}
	server, err := sal.NewHost(cfg)
	require.NoError(tb, err)
	client, err := sal.NewHost(cfg)
	require.NoError(tb, err)
	l, err := server.Listen(ctx, "mem.demo")
	require.NoError(tb, err)
	closeHosts := func() { client.Close(); server.Close() }

	// The connection and one flow through it, so that what is measured
	// next is the flows alone.
	c, err := client.Dial(ctx, "mem.demo")
	require.NoError(tb, err)
	s, err := l.AcceptContext(ctx)
	require.NoError(tb, err)
	exchange(tb, c, s, state)
	dialed, accepted := []*sal.Conn{c}, []*sal.Conn{s}
	m.endsUp()
	accepts := make(chan *sal.Conn, n)
	go func() {
		for range n {
			s, err := l.AcceptContext(ctx)
			if err != nil {
				close(accepts)
				return
			}
			accepts <- s
		}
	}()
	for range n {
		c, err := client.Dial(ctx, "mem.demo")
		require.NoError(tb, err)
		s, ok := <-accepts
		require.True(tb, ok, "accept failed")
		exchange(tb, c, s, state)
		accepted, dialed = append(accepted, s), append(dialed, c)
	}
	m.flowsUp()
	return func() {
		for i := range dialed {
			dialed[i].Close()
			accepted[i].Close()
		}
		closeHosts()
	}
}

func openQUICStreams(tb testing.TB, m *meter, n int, state flowMemState) func() {
	ctx := context.Background()
	qp := newQUICPairConf(tb, true, unreadQUICConf(n))
	cc, err := qp.clientTr.Dial(ctx, qp.addr, qp.tlsConf, unreadQUICConf(n))
	require.NoError(tb, err)
	sc, err := qp.ln.Accept(ctx)
	require.NoError(tb, err)
	c, err := cc.OpenStreamSync(ctx)
	require.NoError(tb, err)
	dialed, accepted := []*quic.Stream{c}, []*quic.Stream{exchangeFirst(tb, c, sc, state)}
	m.endsUp()
	for range n {
		c, err := cc.OpenStreamSync(ctx)
		require.NoError(tb, err)
		s := exchangeFirst(tb, c, sc, state)
		dialed, accepted = append(dialed, c), append(accepted, s)
	}
	m.flowsUp()
	return func() {
		cc.CloseWithError(0, "")
		sc.CloseWithError(0, "")
		qp.close()
	}
}

// exchangeFirst writes the first message on c, accepts the stream it
// opens at the server, and completes the exchange.
func exchangeFirst(tb testing.TB, c *quic.Stream, sc *quic.Conn, state flowMemState) *quic.Stream {
	msg := make([]byte, messageLen(state))
	_, err := c.Write(msg)
	require.NoError(tb, err)
	s, err := sc.AcceptStream(context.Background())
	require.NoError(tb, err)
	if state == memIdle {
		answerByte(tb, c, s)
	}
	return s
}

func openTCPConns(tb testing.TB, m *meter, n int, state flowMemState) func() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	var dialed, accepted []net.Conn
	m.endsUp()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(tb, err)
		s, err := ln.Accept()
		require.NoError(tb, err)
		exchange(tb, c, s, state)
		dialed, accepted = append(dialed, c), append(accepted, s)
	}
	m.flowsUp()
	return func() {
		for i := range dialed {
			dialed[i].Close()
			accepted[i].Close()
		}
		ln.Close()
	}
}

// unreadQUICConf lets n streams open on one connection, and lets their
// unread messages fit in its flow-control window: quic-go's starts at
// 512 KiB and grows only as the receiver reads, so 10,000 unread messages
// would block the next stream's first bytes, for roam and quic-go alike.
func unreadQUICConf(n int) *quic.Config {
	return &quic.Config{
		MaxIncomingStreams:             int64(n + 64),
		InitialConnectionReceiveWindow: 64 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
	}
}

func messageLen(state flowMemState) int {
	if state == memUnread256 {
		return 256
	}
	return 1
}

// exchange puts a dialed end c and its accepted end s in state.
func exchange(tb testing.TB, c, s io.ReadWriter, state flowMemState) {
	_, err := c.Write(make([]byte, messageLen(state)))
	require.NoError(tb, err)
	if state == memIdle {
		answerByte(tb, c, s)
	}
}

// answerByte reads the dialer's byte at s and answers with one.
func answerByte(tb testing.TB, c, s io.ReadWriter) {
	var b [1]byte
	_, err := io.ReadFull(s, b[:])
	require.NoError(tb, err)
	_, err = s.Write(b[:])
	require.NoError(tb, err)
	_, err = io.ReadFull(c, b[:])
	require.NoError(tb, err)
}
