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

// TestRelayDelayAccuracy checks that the relay adds its configured delay
// within 1 ms. It compares the median round trip with and without the
// delay, which cancels the loopback's own time and resists the outliers of
// a busy machine.
func TestRelayDelayAccuracy(t *testing.T) {
	srv := newUDPServer(t, true)
	r := newRelay(t, RelayConfig{Server: srv.addr()})
	cli := udpClient(t)
	median := func() time.Duration {
		var rtts []time.Duration
		for i := range 60 {
			msg := binary.BigEndian.AppendUint32(nil, uint32(i))
			rtt, _, ok := roundTrip(t, cli, r.ServerAddr(), msg)
			require.True(t, ok)
			rtts = append(rtts, rtt)
			time.Sleep(time.Millisecond)
		}
		slices.Sort(rtts)
		return rtts[len(rtts)/2]
	}
	base := median()
	for _, d := range []time.Duration{5 * time.Millisecond, 20 * time.Millisecond} {
		r.Configure(Up, LinkConfig{Delay: d})
		r.Configure(Down, LinkConfig{Delay: d})
		added := median() - base
		t.Logf("delay %v each way: round trip grew by %v (base %v)", d, added, base)
		require.InDelta(t, float64(2*d), float64(added), float64(2*time.Millisecond), "1 ms per direction")
	}
}

// TestRelayBandwidth offers twice a 20 Mbit/s rate and checks what comes
// out within 5%.
func TestRelayBandwidth(t *testing.T) {
	const rate, size = 20_000_000, 1200
	var mu sync.Mutex
	var first, last time.Time
	var bytes int
	srvConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer srvConn.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer srvConn.Close()
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := srvConn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mu.Lock()
			if first.IsZero() {
				first = time.Now()
			} else {
				bytes += n // the first datagram's bytes left before first
			}
			last = time.Now()
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
	time.Sleep(200 * time.Millisecond) // the queue drains
	mu.Lock()
	got := float64(bytes*8) / last.Sub(first).Seconds()
	mu.Unlock()
	t.Logf("rate %d bit/s, measured %.0f bit/s", rate, got)
	require.InEpsilon(t, rate, got, 0.05)
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
	r := newRelay(t, RelayConfig{Server: srv.addr(), PathConfig: PathConfig{Down: LinkConfig{Delay: 50 * time.Millisecond}}})
	cli := udpClient(t)
	_, _, ok := roundTrip(t, cli, r.ServerAddr(), []byte("a"))
	require.True(t, ok)
	// The echo of "b" is in flight in the down link when the blackout
	// begins, and is dropped with it.
	_, err := cli.WriteToUDPAddrPort([]byte("b"), r.ServerAddr())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(srv.sources()) == 2 }, 5*time.Second, time.Millisecond)
	r.Blackout(300 * time.Millisecond)
	require.True(t, noReply(t, cli, r.ServerAddr(), []byte("c")))
	st := r.Link(Down).Stats()
	require.Equal(t, uint64(1), st.Dropped[DropBlackout], "the datagram in flight")
	require.Equal(t, uint64(1), r.Link(Up).Stats().Dropped[DropBlackout])
	_, _, ok = roundTrip(t, cli, r.ServerAddr(), []byte("d"))
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
