package emu

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roamnet/roam/mobility/trace"
	"github.com/stretchr/testify/require"
)

// Two local addresses of one client, as on two modems.
var (
	cliA = netip.MustParseAddrPort("10.0.1.2:5000")
	cliB = netip.MustParseAddrPort("10.0.2.2:5000")
)

// multiBed is a client with two sockets, one per carrier, and a server,
// with a MultiPath between them.
type multiBed struct {
	nw     *Network
	mp     *MultiPath
	srv    *PacketConn
	cli    [2]*PacketConn
	pa, pb *Path
}

func newMultiBed(t *testing.T, cfgA, cfgB PathConfig) *multiBed {
	t.Helper()
	b := &multiBed{nw: NewNetwork(1)}
	t.Cleanup(func() { b.nw.Close() })
	b.srv = listen(t, b.nw, srvAddr)
	b.cli = [2]*PacketConn{listen(t, b.nw, cliA), listen(t, b.nw, cliB)}
	var err error
	b.mp, err = b.nw.NewMultiPath(srvAddr, Route{From: cliA.Addr(), PathConfig: cfgA}, Route{From: cliB.Addr(), PathConfig: cfgB})
	require.NoError(t, err)
	b.pa, b.pb = b.mp.Path(cliA.Addr()), b.mp.Path(cliB.Addr())
	require.Equal(t, b.mp.Paths(), []*Path{b.pa, b.pb})
	return b
}

func (b *multiBed) send(t *testing.T, i int, msg string) {
	t.Helper()
	_, err := b.cli[i].WriteToUDPAddrPort([]byte(msg), b.mp.ServerAddr())
	require.NoError(t, err)
}

func TestMultiPathEachRouteHasItsLink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newMultiBed(t,
			PathConfig{Up: LinkConfig{Delay: 20 * time.Millisecond}, Down: LinkConfig{Delay: 20 * time.Millisecond}},
			PathConfig{Up: LinkConfig{Delay: 50 * time.Millisecond}, Down: LinkConfig{Delay: 50 * time.Millisecond}})
		require.Equal(t, b.pa.ServerAddr(), b.mp.ServerAddr(), "one server address on every path")
		require.Equal(t, b.pb.ServerAddr(), b.mp.ServerAddr())
		var maps [2]netip.AddrPort
		for i, want := range []time.Duration{40 * time.Millisecond, 100 * time.Millisecond} {
			start := time.Now()
			b.send(t, i, "ping")
			msg, from := read(t, b.srv)
			require.Equal(t, "ping", msg)
			maps[i] = from
			_, err := b.srv.WriteToUDPAddrPort([]byte("pong"), from)
			require.NoError(t, err)
			msg, from = read(t, b.cli[i])
			require.Equal(t, "pong", msg)
			require.Equal(t, b.mp.ServerAddr(), from, "replies come from the one server address")
			require.Equal(t, want, time.Since(start), "path %d's own round trip", i)
		}
		require.NotEqual(t, maps[0].Addr(), maps[1].Addr(), "each carrier has its own NAT")
		m, ok := b.pa.Mapping(cliA)
		require.True(t, ok)
		require.Equal(t, maps[0], m)
		_, ok = b.pa.Mapping(cliB)
		require.False(t, ok, "B's datagrams never took path A")
	})
}

func TestMultiPathHandoverOfOneCarrier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newMultiBed(t, PathConfig{}, PathConfig{})
		b.send(t, 0, "a0")
		_, a0 := read(t, b.srv)
		b.send(t, 1, "b0")
		_, b0 := read(t, b.srv)

		b.pa.Handover(time.Second)
		b.send(t, 0, "lost")
		b.send(t, 1, "b1")
		msg, from := read(t, b.srv)
		require.Equal(t, "b1", msg, "B carries on while A hands over")
		require.Equal(t, b0, from, "and keeps its mapping")
		time.Sleep(time.Second)
		b.send(t, 0, "a1")
		msg, from = read(t, b.srv)
		require.Equal(t, "a1", msg)
		require.NotEqual(t, a0.Addr(), from.Addr(), "A's handover gave it a new address")
		require.Equal(t, uint64(1), b.pa.Link(Up).Stats().Dropped[DropBlackout])
		require.Zero(t, b.pb.Link(Up).Stats().Dropped[DropBlackout])

		// A tunnel cuts both.
		b.mp.Blackout(time.Second)
		b.send(t, 0, "lost")
		b.send(t, 1, "lost")
		time.Sleep(time.Second)
		b.send(t, 1, "b2")
		msg, _ = read(t, b.srv)
		require.Equal(t, "b2", msg)
		require.Equal(t, uint64(1), b.pb.Link(Up).Stats().Dropped[DropBlackout])
	})
}

func TestMultiPathMoveServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newMultiBed(t, PathConfig{}, PathConfig{})
		old := b.mp.ServerAddr()
		require.NoError(t, b.pb.MoveServer(), "a member moves the whole group's server")
		moved := b.mp.ServerAddr()
		require.NotEqual(t, old, moved)
		require.Equal(t, moved, b.pa.ServerAddr())
		for i := range 2 {
			_, err := b.cli[i].WriteToUDPAddrPort([]byte("stale"), old)
			require.NoError(t, err)
			b.send(t, i, "fresh")
			msg, _ := read(t, b.srv)
			require.Equal(t, "fresh", msg)
		}
		require.Equal(t, uint64(1), b.pa.Link(Up).Stats().Dropped[DropStale])
		require.Equal(t, uint64(1), b.pb.Link(Up).Stats().Dropped[DropStale])
	})
}

func TestMultiPathDefaultRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newMultiBed(t, PathConfig{}, PathConfig{})
		other := listen(t, b.nw, netip.MustParseAddrPort("10.0.3.2:5000"))
		_, err := other.WriteToUDPAddrPort([]byte("x"), b.mp.ServerAddr())
		require.NoError(t, err)
		msg, _ := read(t, b.srv)
		require.Equal(t, "x", msg)
		_, ok := b.pa.Mapping(other.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort())
		require.True(t, ok, "an unnamed source takes the first route")
	})
}

func TestMultiPathBadRoutes(t *testing.T) {
	nw := NewNetwork(1)
	defer nw.Close()
	a := cliA.Addr()
	for name, routes := range map[string][]Route{
		"none":      nil,
		"no from":   {{}},
		"duplicate": {{From: a}, {From: netip.AddrFrom16(a.As16())}},
	} {
		_, err := nw.NewMultiPath(srvAddr, routes...)
		require.ErrorIs(t, err, ErrBadRoute, name)
	}
	nw.Close()
	_, err := nw.NewMultiPath(srvAddr, Route{From: a})
	require.ErrorIs(t, err, ErrNetworkClosed)
}

// TestMultiPathPlay plays a trace per carrier, with handovers at
// different times and a tunnel that cuts both, while the client sends
// every datagram on both paths. Outside the tunnel, some path always
// delivers; every datagram that arrives is intact.
func TestMultiPathPlay(t *testing.T) {
	trA, err := trace.ParseString("0 link rtt_ms=40\n1.0 handover outage_ms=300\n3.0 blackout duration_ms=1000\n5.0 end\n")
	require.NoError(t, err)
	trB, err := trace.ParseString("0 link rtt_ms=60\n2.0 handover outage_ms=300\n3.0 blackout duration_ms=1000\n5.0 end\n")
	require.NoError(t, err)
	synctest.Test(t, func(t *testing.T) {
		b := newMultiBed(t, PathConfig{}, PathConfig{})
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- b.mp.Play(context.Background(), trA, trB) }()

		type arrival struct {
			at   time.Duration
			path byte
		}
		got := make(chan arrival, 2048)
		go func() {
			defer close(got)
			buf := make([]byte, 2048)
			for {
				n, _, err := b.srv.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				p := buf[:n]
				if crc32.ChecksumIEEE(p[:n-4]) != binary.BigEndian.Uint32(p[n-4:]) {
					panic("corrupt datagram")
				}
				got <- arrival{time.Since(start), p[0]}
			}
		}()
		// Off the trace's grid of whole milliseconds, so that no send and
		// event share an instant.
		time.Sleep(500 * time.Microsecond)
		for seq := uint32(0); time.Since(start) < 5*time.Second; seq++ {
			for i := range 2 {
				p := make([]byte, 1+4+200+4)
				p[0] = byte(i)
				binary.BigEndian.PutUint32(p[1:], seq)
				for j := 5; j < 205; j++ {
					p[j] = byte(seq*31 + uint32(j))
				}
				binary.BigEndian.PutUint32(p[205:], crc32.ChecksumIEEE(p[:205]))
				_, err := b.cli[i].WriteToUDPAddrPort(p, b.mp.ServerAddr())
				require.NoError(t, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		require.NoError(t, <-done)
		time.Sleep(100 * time.Millisecond)
		b.srv.Close()

		var last time.Duration
		var per [2]int
		var gaps []time.Duration
		for a := range got {
			per[a.path]++
			if gap := a.at - last; gap > 50*time.Millisecond {
				gaps = append(gaps, gap)
			}
			last = a.at
		}
		require.Len(t, gaps, 1, "only the tunnel stops everything: %v", gaps)
		// From the last datagram before the tunnel to the first after it:
		// the tunnel, plus at most a one-way delay and a sending interval.
		require.GreaterOrEqual(t, gaps[0], time.Second)
		require.LessOrEqual(t, gaps[0], time.Second+40*time.Millisecond)
		// 500 rounds; each path loses its outage (30), the tunnel (100),
		// and what was in flight as each began (a one-way delay's worth).
		for i, n := range per {
			require.InDelta(t, 500-30-100-5, n, 5, "path %d", i)
		}
		for _, p := range b.mp.Paths() {
			for why, n := range p.Link(Up).Stats().Dropped {
				require.True(t, why == DropBlackout || n == 0, "the outages are the only losses: %v", why)
			}
		}
	})
}

// TestMultiPathHSR300Dual plays the two carriers of hsr-300-dual, ten
// minutes in virtual time, while the client sends a datagram on each path
// every 100 ms. Outside the tunnels, nearly every round gets through on
// some path, though each carrier hands over about 40 times; in the
// tunnels, none does.
func TestMultiPathHSR300Dual(t *testing.T) {
	trs, err := trace.MultiProfile("hsr-300-dual")
	require.NoError(t, err)
	tunnels := blackouts(trs[0])
	require.NotEmpty(t, tunnels)
	// inTunnel reports whether a datagram sent at at is inside a tunnel,
	// or, with slack, may be caught in flight at its entry.
	inTunnel := func(at, slack time.Duration) bool {
		for _, e := range tunnels {
			if at >= e.At-slack && at < e.At+e.Duration {
				return true
			}
		}
		return false
	}
	synctest.Test(t, func(t *testing.T) {
		b := newMultiBed(t, PathConfig{}, PathConfig{})
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- b.mp.Play(context.Background(), trs...) }()
		arrived := make(chan [2]uint32, 1<<14)
		go func() {
			defer close(arrived)
			buf := make([]byte, 64)
			for {
				n, _, err := b.srv.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if n == 8 {
					arrived <- [2]uint32{binary.BigEndian.Uint32(buf), binary.BigEndian.Uint32(buf[4:])}
				}
			}
		}()
		end := trs[0].Duration()
		var rounds uint32
		for ; ; rounds++ {
			at := 50*time.Millisecond + time.Duration(rounds)*100*time.Millisecond
			if at >= end {
				break
			}
			time.Sleep(time.Until(start.Add(at)))
			for i := range 2 {
				var p [8]byte
				binary.BigEndian.PutUint32(p[:], rounds)
				binary.BigEndian.PutUint32(p[4:], uint32(i))
				_, err := b.cli[i].WriteToUDPAddrPort(p[:], b.mp.ServerAddr())
				require.NoError(t, err)
			}
		}
		require.NoError(t, <-done)
		time.Sleep(time.Second)
		b.srv.Close()
		got := make([][2]bool, rounds)
		for a := range arrived {
			got[a[0]][a[1]] = true
		}
		var lost, lostOne [2]int
		var lostBoth, tunnelled int
		for r, g := range got {
			at := 50*time.Millisecond + time.Duration(r)*100*time.Millisecond
			if inTunnel(at, 0) {
				require.False(t, g[0] || g[1], "round %d at %v: inside a tunnel", r, at)
			}
			if inTunnel(at, 200*time.Millisecond) {
				tunnelled++
				continue
			}
			for i := range 2 {
				if !g[i] {
					lost[i]++
					if g[1-i] {
						lostOne[i]++
					}
				}
			}
			if !g[0] && !g[1] {
				lostBoth++
			}
		}
		t.Logf("%d rounds, %d in tunnels; lost outside: a %d, b %d, both %d", rounds, tunnelled, lost[0], lost[1], lostBoth)
		for i := range 2 {
			// A carrier loses rounds to its handovers and its random
			// loss; the other carrier covers nearly all of them.
			require.GreaterOrEqual(t, lostOne[i], len(handovers(trs[i])), "path %d", i)
		}
		// Random loss is at most 3% a carrier, so both lose a round about
		// once in a thousand; handovers never coincide.
		require.Less(t, lostBoth, int(rounds)/200)
	})
}

func handovers(tr *trace.Trace) []trace.Event {
	var out []trace.Event
	for _, e := range tr.Events {
		if e.Kind == trace.KindHandover {
			out = append(out, e)
		}
	}
	return out
}

func blackouts(tr *trace.Trace) []trace.Event {
	var out []trace.Event
	for _, e := range tr.Events {
		if e.Kind == trace.KindBlackout {
			out = append(out, e)
		}
	}
	return out
}
