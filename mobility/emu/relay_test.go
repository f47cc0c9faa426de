package emu

import (
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Tests of the relay use real sockets on loopback and real time. They
// bound times loosely, to catch hangs, except for the delay accuracy the
// relay documents, which they measure robustly.

// udpServer is an echo server on loopback that notes who sent what.
type udpServer struct {
	conn *net.UDPConn
	mu   sync.Mutex
	from []netip.AddrPort
	wg   sync.WaitGroup
}

func newUDPServer(t *testing.T, echo bool) *udpServer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	_ = c.SetReadBuffer(4 << 20)
	s := &udpServer{conn: c}
	s.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.from = append(s.from, from)
			s.mu.Unlock()
			if echo {
				_, _ = c.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	})
	t.Cleanup(func() { c.Close(); s.wg.Wait() })
	return s
}

func (s *udpServer) addr() netip.AddrPort { return localAddr(s.conn) }

func (s *udpServer) sources() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.from)
}

func newRelay(t *testing.T, cfg RelayConfig) *Relay {
	t.Helper()
	r, err := NewRelay(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.Close()) })
	return r
}

func udpClient(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	_ = c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg to addr and waits for the echo, for up to 2 s.
func roundTrip(t *testing.T, c *net.UDPConn, to netip.AddrPort, msg []byte) (time.Duration, netip.AddrPort, bool) {
	t.Helper()
	return roundTripWithin(t, c, to, msg, 2*time.Second)
}

// noReply reports whether msg sent to addr went unanswered for 300 ms.
func noReply(t *testing.T, c *net.UDPConn, to netip.AddrPort, msg []byte) bool {
	t.Helper()
	_, _, ok := roundTripWithin(t, c, to, msg, 300*time.Millisecond)
	return !ok
}

func roundTripWithin(t *testing.T, c *net.UDPConn, to netip.AddrPort, msg []byte, within time.Duration) (time.Duration, netip.AddrPort, bool) {
	t.Helper()
	buf := make([]byte, 65536)
	start := time.Now()
	_, err := c.WriteToUDPAddrPort(msg, to)
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(start.Add(within)))
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return 0, netip.AddrPort{}, false
		}
		if string(buf[:n]) == string(msg) {
			return time.Since(start), unmap(from), true
		}
	}
}

func TestRelayForwards(t *testing.T) {
	srv := newUDPServer(t, true)
	var mu sync.Mutex
	var kinds []EventKind
	r := newRelay(t, RelayConfig{Server: srv.addr(), PathConfig: PathConfig{OnEvent: func(e Event) {
		mu.Lock()
		kinds = append(kinds, e.Kind)
		mu.Unlock()
	}}})
	cli := udpClient(t)
	_, from, ok := roundTrip(t, cli, r.ServerAddr(), []byte("hello"))
	require.True(t, ok)
	require.Equal(t, r.ServerAddr(), from, "the echo comes from the relay's front")
	m, ok := r.Mapping(localAddr(cli))
	require.True(t, ok)
	require.Equal(t, []netip.AddrPort{m}, srv.sources(), "the server sees the client's mapping")
	require.NotEqual(t, localAddr(cli), m)
	require.Equal(t, srv.addr(), r.Server())
	mu.Lock()
	require.Equal(t, []EventKind{EventForward, EventMapping, EventForward}, kinds)
	mu.Unlock()
}

func TestRelayHandoverAndRebind(t *testing.T) {
	srv := newUDPServer(t, true)
	r := newRelay(t, RelayConfig{Server: srv.addr()})
	cli := udpClient(t)
	_, _, ok := roundTrip(t, cli, r.ServerAddr(), []byte("a"))
	require.True(t, ok)

	r.Handover(0)
	_, _, ok = roundTrip(t, cli, r.ServerAddr(), []byte("b"))
	require.True(t, ok)
	r.Rebind()
	_, _, ok = roundTrip(t, cli, r.ServerAddr(), []byte("c"))
	require.True(t, ok)

	src := srv.sources()
	require.Len(t, src, 3)
	require.NotEqual(t, src[0], src[1], "a handover changes the source the server sees")
	if runtime.GOOS == "linux" {
		require.NotEqual(t, src[0].Addr(), src[1].Addr(), "on Linux, a new address")
	}
	require.Equal(t, src[1].Addr(), src[2].Addr(), "a rebind keeps the address")
	require.NotEqual(t, src[1].Port(), src[2].Port(), "and changes the port")

	// During an outage nothing passes.
	r.Handover(time.Hour)
	require.True(t, noReply(t, cli, r.ServerAddr(), []byte("d")))
	require.Equal(t, uint64(1), r.Link(Up).Stats().Dropped[DropBlackout])
}

func TestRelayMoveServer(t *testing.T) {
	srv := newUDPServer(t, true)
	var mu sync.Mutex
	var stale int
	r := newRelay(t, RelayConfig{Server: srv.addr(), PathConfig: PathConfig{OnEvent: func(e Event) {
		if e.Kind == EventDrop && e.Reason == DropStale {
			mu.Lock()
			stale++
			mu.Unlock()
		}
	}}})
	cli := udpClient(t)
	old := r.ServerAddr()
	require.NoError(t, r.MoveServer())
	moved := r.ServerAddr()
	require.NotEqual(t, old, moved)

	require.True(t, noReply(t, cli, old, []byte("to the old")), "the old address drops everything")
	_, from, ok := roundTrip(t, cli, moved, []byte("to the new"))
	require.True(t, ok)
	require.Equal(t, moved, from)
	mu.Lock()
	require.Equal(t, 1, stale)
	mu.Unlock()
}

// TestRelayDelayAccuracy checks the delay the relay adds. A delay can
// only come out late, never early: every round trip must take at least
// twice the one-way delay. Lateness is bounded on a low percentile of the
// round trips less that of round trips without the delay, which cancels
// the loopback's own time and leaves out most of the late wake-ups of a
// busy machine; the bound is 1 ms per direction, or a tenth of the delay
// where that is more.
func TestRelayDelayAccuracy(t *testing.T) {
	srv := newUDPServer(t, true)
	r := newRelay(t, RelayConfig{Server: srv.addr()})
	cli := udpClient(t)
	roundTrips := func() []time.Duration {
		var rtts []time.Duration
		for i := range 60 {
			msg := binary.BigEndian.AppendUint32(nil, uint32(i))
			rtt, _, ok := roundTrip(t, cli, r.ServerAddr(), msg)
			require.True(t, ok)
			rtts = append(rtts, rtt)
			time.Sleep(time.Millisecond)
		}
		slices.Sort(rtts)
		return rtts
	}
	low := func(sorted []time.Duration) time.Duration { return sorted[len(sorted)/5] }
	base := low(roundTrips())
	for _, d := range []time.Duration{5 * time.Millisecond, 20 * time.Millisecond} {
		r.Configure(Up, LinkConfig{Delay: d})
		r.Configure(Down, LinkConfig{Delay: d})
		rtts := roundTrips()
		added := low(rtts) - base
		t.Logf("delay %v each way: round trips from %v, grew by %v (base %v)", d, rtts[0], added, base)
		require.GreaterOrEqual(t, rtts[0], 2*d, "a datagram left the relay early")
		require.LessOrEqual(t, added, 2*d+max(2*time.Millisecond, 2*d/10), "late by more than 1 ms (or a tenth) per direction")
	}
}

// TestRelayBandwidth offers twice a 20 Mbit/s rate and checks the rate
// that comes out: the median over spans of 100 datagrams in the middle half
// of the run, clear of the start and of the drain. A median of short spans
// leaves out the few that a stalled reader or relay (on a loaded machine)
// squeezes or stretches, which would skew one measurement over the whole
// run. What leaves a link cannot beat its rate, so the bound above is
// tight; the one below allows the relay to fall behind a little.
func TestRelayBandwidth(t *testing.T) {
	const rate, size = 20_000_000, 1200
	var mu sync.Mutex
	var arrivals []time.Time
	srvConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer srvConn.Close()
	_ = srvConn.SetReadBuffer(4 << 20)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer srvConn.Close()
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			_, _, err := srvConn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			now := time.Now()
			mu.Lock()
			arrivals = append(arrivals, now)
			mu.Unlock()
		}
	})
	r := newRelay(t, RelayConfig{Server: localAddr(srvConn), PathConfig: PathConfig{Up: LinkConfig{Rate: rate}}})
	cli := udpClient(t)
	msg := make([]byte, size)
	// 8 datagrams every 2 ms: 38.4 Mbit/s, for 1.5 s.
	start := time.Now()
	for tick := 0; time.Since(start) < 1500*time.Millisecond; tick++ {
		for range 8 {
			_, err := cli.WriteToUDPAddrPort(msg, r.ServerAddr())
			require.NoError(t, err)
		}
		time.Sleep(time.Until(start.Add(time.Duration(tick+1) * 2 * time.Millisecond)))
	}
	// The queue drains (100 ms at most), and the server reads it. (Only
	// the middle of the run is measured, so a datagram the server's socket
	// dropped, or one still to come, would not skew it.)
	received := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(arrivals)
	}
	for deadline := time.Now().Add(2 * time.Second); received() < int(r.Link(Up).Stats().Forwarded) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	const span = 100
	var spans []time.Duration
	for i := len(arrivals) / 4; i+span <= 3*len(arrivals)/4; i++ {
		spans = append(spans, arrivals[i+span].Sub(arrivals[i]))
	}
	require.NotEmpty(t, spans)
	slices.Sort(spans)
	got := float64(span*size*8) / spans[len(spans)/2].Seconds()
	t.Logf("rate %d bit/s, measured %.0f bit/s (%d datagrams)", rate, got, len(arrivals))
	require.LessOrEqual(t, got, rate*1.02, "faster than the link")
	require.GreaterOrEqual(t, got, rate*0.9, "slower than the link")
	require.Positive(t, r.Link(Up).Stats().Dropped[DropQueue])
}

// TestRelayLoss checks the loss rate over real sockets: what the model
// decided is within statistical bounds, and the sockets lost nothing more.
func TestRelayLoss(t *testing.T) {
	srv := newUDPServer(t, false)
	r := newRelay(t, RelayConfig{Server: srv.addr(), Seed: 3, PathConfig: PathConfig{Up: LinkConfig{Loss: 0.1}}})
	cli := udpClient(t)
	const n = 5000
	for i := range n {
		_, err := cli.WriteToUDPAddrPort([]byte{byte(i)}, r.ServerAddr())
		require.NoError(t, err)
		if i%100 == 99 {
			time.Sleep(time.Millisecond) // stay far below the socket buffers
		}
	}
	var st LinkStats
	require.Eventually(t, func() bool {
		st = r.Link(Up).Stats()
		return st.Forwarded+st.Dropped[DropLoss] == n
	}, 5*time.Second, time.Millisecond, "the relay did not read every datagram")
	lo, hi := bounds(n, 0.1)
	lost := float64(st.Dropped[DropLoss])
	require.True(t, lost >= lo && lost <= hi, "lost %v of %d, want %.0f to %.0f", lost, n, lo, hi)
	require.Eventually(t, func() bool { return uint64(len(srv.sources())) == st.Forwarded },
		5*time.Second, 5*time.Millisecond, "the sockets lost datagrams")
}

func TestRelayBlackout(t *testing.T) {
	srv := newUDPServer(t, true)
	// The blackout's own clock: it ends at the event's Time plus its Delay.
	blackout := make(chan Event, 1)
	r := newRelay(t, RelayConfig{Server: srv.addr(), PathConfig: PathConfig{
		// Echoes sit 500 ms in the down link: ample time to start the
		// blackout while one is there.
		Down: LinkConfig{Delay: 500 * time.Millisecond},
		OnEvent: func(e Event) {
			if e.Kind == EventBlackout {
				blackout <- e
			}
		},
	}})
	cli := udpClient(t)
	_, _, ok := roundTripWithin(t, cli, r.ServerAddr(), []byte("a"), 5*time.Second)
	require.True(t, ok)
	// The echo of "b" is in flight in the down link when the blackout
	// begins, and is dropped with it.
	_, err := cli.WriteToUDPAddrPort([]byte("b"), r.ServerAddr())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(srv.sources()) == 2 }, 5*time.Second, time.Millisecond)
	r.Blackout(time.Second)
	require.True(t, noReply(t, cli, r.ServerAddr(), []byte("c")))
	st := r.Link(Down).Stats()
	require.Equal(t, uint64(1), st.Dropped[DropBlackout], "the datagram in flight")
	require.Equal(t, uint64(1), r.Link(Up).Stats().Dropped[DropBlackout])
	e := <-blackout
	time.Sleep(time.Until(e.Time.Add(e.Delay)))
	_, _, ok = roundTripWithin(t, cli, r.ServerAddr(), []byte("d"), 5*time.Second)
	require.True(t, ok, "after the blackout")
}

func TestRelayConfigErrors(t *testing.T) {
	_, err := NewRelay(RelayConfig{})
	require.Error(t, err)
	srv := newUDPServer(t, false)
	r := newRelay(t, RelayConfig{Server: srv.addr()})
	_, err = NewRelay(RelayConfig{Server: srv.addr(), Listen: r.ServerAddr()})
	require.Error(t, err, "the front's address is taken")
	require.NoError(t, r.Close())
	require.ErrorIs(t, r.MoveServer(), net.ErrClosed)
}

// TestRelayRuns sends runs of datagrams in one system call, as quic-go
// does on Linux (GSO), and checks that the relay still treats each
// datagram on its own: a hook drops every third, and a server without
// GRO receives the others, whole and in order.
func TestRelayRuns(t *testing.T) {
	if oobSize == 0 {
		t.Skip("no GSO here")
	}
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer srv.Close()
	var mu sync.Mutex
	var seen int
	r := newRelay(t, RelayConfig{Server: localAddr(srv), PathConfig: PathConfig{Hook: func(p Packet) Verdict {
		mu.Lock()
		defer mu.Unlock()
		seen++
		return Verdict{Drop: p.Data[0]%3 == 2}
	}}})
	cli, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.ServerAddr()))
	require.NoError(t, err)
	defer cli.Close()

	const size, run, runs = 1000, 20, 5
	msg := make([]byte, size*run)
	for k := range runs {
		for i := range run {
			msg[i*size] = byte(k*run + i)
		}
		last := size * run
		if k == runs-1 {
			last -= size / 2 // a short last datagram, as GSO allows
		}
		_, _, err := cli.WriteMsgUDPAddrPort(msg[:last], gsoOOB(make([]byte, oobSize), size), netip.AddrPort{})
		require.NoError(t, err)
	}
	var want []byte
	for i := range byte(runs * run) {
		if i%3 != 2 {
			want = append(want, i)
		}
	}
	var got []byte
	buf := make([]byte, 65536)
	require.NoError(t, srv.SetReadDeadline(time.Now().Add(5*time.Second)))
	for len(got) < len(want) {
		n, err := srv.Read(buf)
		require.NoError(t, err)
		want := size
		if buf[0] == runs*run-1 {
			want = size / 2
		}
		require.Equal(t, want, n, "datagram %d", buf[0])
		got = append(got, buf[0])
	}
	require.Equal(t, want, got)
	mu.Lock()
	require.Equal(t, runs*run, seen, "the hook saw every datagram")
	mu.Unlock()
}
