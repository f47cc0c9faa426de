package sal

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// These tests give a client Host two local paths (Config.Paths) to one
// server, each through its own emulated path (emu.MultiPath), as a device
// with a modem on each of two carriers has, and break the paths under
// live flows, in virtual time.

// dualBed is a server Host and a client Host with two paths to it.
type dualBed struct {
	nw             *emu.Network
	mp             *emu.MultiPath
	server, client *Host
	l              *Listener
	c, sc          *Conn
	serverLog      eventLog
	clientLog      eventLog
}

const (
	dualFirst  = "10.0.1.1"
	dualSecond = "10.0.2.1"
)

// dualLink: 20 ms each way, so an RTT of 40 ms on either path.
var dualLink = emu.LinkConfig{Delay: 20 * time.Millisecond}

func newDualBed(t *testing.T, clientCfg Config) *dualBed {
	b := &dualBed{nw: emu.NewNetwork(1)}
	t.Cleanup(func() { b.nw.Close() })
	mem := resolve.NewMemory()
	serverAddr := netip.MustParseAddrPort("10.0.0.1:443")
	var err error
	b.mp, err = b.nw.NewMultiPath(serverAddr,
		emu.Route{From: netip.MustParseAddr(dualFirst), PathConfig: emu.PathConfig{Up: dualLink, Down: dualLink}},
		emu.Route{From: netip.MustParseAddr(dualSecond), PathConfig: emu.PathConfig{Up: dualLink, Down: dualLink}})
	require.NoError(t, err)
	b.server = newHost(t, Config{
		Resolver: mem, ListenAddr: serverAddr.String(), ListenPacket: b.nw.ListenPacket,
		AdvertiseAddr: b.mp.ServerAddr(), OnEvent: b.serverLog.record,
	})
	clientCfg.Resolver = mem
	clientCfg.ListenAddr = dualFirst + ":0"
	if clientCfg.Paths == nil {
		clientCfg.Paths = []string{dualSecond + ":0"}
	}
	clientCfg.ListenPacket = b.nw.ListenPacket
	clientCfg.OnEvent = b.clientLog.record
	b.client = newHost(t, clientCfg)
	b.l, err = b.server.Listen(t.Context(), "dual.demo")
	require.NoError(t, err)
	b.c, b.sc = openPair(t, b.client, b.l, "dual.demo")
	return b
}

// carrying returns the index of the path that carries the flow now.
func (b *dualBed) carrying(t *testing.T) int {
	t.Helper()
	infos := b.client.Paths()
	for i, p := range infos {
		if p.Flows > 0 {
			return i
		}
	}
	t.Fatalf("no path carries the flow: %+v", infos)
	return -1
}

// waitPaths waits, in virtual time, until every path is up with a
// connection.
func (b *dualBed) waitPaths(t *testing.T, n int) []PathInfo {
	t.Helper()
	for range 100 {
		infos := b.client.Paths()
		up := 0
		for _, p := range infos {
			if p.State == PathUp && p.Conns == 1 {
				up++
			}
		}
		if len(infos) == n && up == n {
			return infos
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("paths never all up: %+v", b.client.Paths())
	return nil
}

func TestPathsKeepAStandbyOnEveryPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newDualBed(t, Config{})
		roundTrip(t, b.c, b.sc, "hello")
		infos := b.waitPaths(t, 2)
		require.Equal(t, dualFirst, infos[0].Local.Addr().String(), "ListenAddr's path first")
		require.Equal(t, dualSecond, infos[1].Local.Addr().String())
		require.Equal(t, 1, infos[0].Flows, "standby: the first path carries the flow")
		require.Zero(t, infos[1].Flows)

		// The standby stays validated for as long as the flow lives: well
		// past the 5 s after which a listening Host closes a connection
		// that never carried anything, and past its idle timeout.
		time.Sleep(70 * time.Second)
		infos = b.waitPaths(t, 2)
		require.Greater(t, infos[1].BytesSent, uint64(0))
		require.Greater(t, infos[1].BytesReceived, uint64(0))
		require.NotZero(t, infos[1].SmoothedRTT)
		roundTrip(t, b.c, b.sc, "still there")
		require.Zero(t, b.clientLog.count(EventPathDown))
	})
}

// paced streams small messages from the listener every 5 ms for d and
// returns the longest time the dialer went without one; each side checks
// the bytes.
func paced(t *testing.T, c, sc *Conn, d time.Duration, during func()) (longest time.Duration) {
	t.Helper()
	const every = 5 * time.Millisecond
	msg := randomBytes(200, 7)
	var wg sync.WaitGroup
	sent := 0
	wg.Go(func() {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(every) {
			if _, err := sc.Write(msg); err != nil {
				t.Errorf("write: %v", err)
				return
			}
			sent++
		}
		sc.CloseWrite()
	})
	wg.Go(during)
	buf := make([]byte, len(msg))
	last := time.Now()
	n := 0
	for {
		_, err := io.ReadFull(c, buf)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		require.Equal(t, msg, buf, "message %d", n)
		n++
		now := time.Now()
		longest = max(longest, now.Sub(last))
		last = now
	}
	wg.Wait()
	require.Equal(t, sent, n, "every message arrives once")
	return longest
}

func TestPathsFailoverStallsUnderAFewRTTs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		paths []string
		// within bounds the longest gap: a few RTTs of 40 ms with two
		// paths; the whole outage with one.
		within, atLeast time.Duration
	}{
		{"two paths", nil, 250 * time.Millisecond, 0},
		{"one path", []string{}, time.Hour, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newDualBed(t, Config{Paths: tc.paths})
				roundTrip(t, b.c, b.sc, "hello")
				if tc.paths == nil {
					b.waitPaths(t, 2)
				}
				longest := paced(t, b.c, b.sc, 6*time.Second, func() {
					time.Sleep(time.Second)
					t.Logf("%v blackout", time.Now().Format("05.000"))
					b.mp.Paths()[0].Blackout(3 * time.Second) // a handover of the first carrier
				})
				t.Logf("longest gap: %v", longest)
				b.clientLog.mu.Lock()
				for i, e := range b.clientLog.events {
					t.Logf("%v %v %v %v stall=%v", b.clientLog.at[i].Format("05.000"), e.Kind, e.From, e.To, e.Stall)
				}
				b.clientLog.mu.Unlock()
				require.Less(t, longest, tc.within)
				require.GreaterOrEqual(t, longest, tc.atLeast)
				if tc.paths == nil {
					require.Equal(t, 1, b.carrying(t), "the flow moved to the second path")
					require.Equal(t, 1, b.clientLog.count(EventPathDown))
				}
				require.Zero(t, b.clientLog.count(EventLost))
			})
		})
	}
}

// Each carrier in turn goes dark under a transfer in both directions; the
// flow moves to the other every time, and every byte arrives once.
func TestPathsAlternatingOutagesLoseNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newDualBed(t, Config{})
		roundTrip(t, b.c, b.sc, "hello")
		b.waitPaths(t, 2)
		const outages = 6
		motion(t, b.c, b.sc, outages, func(i int) {
			b.mp.Paths()[b.carrying(t)].Blackout(2 * time.Second)
		})
		require.GreaterOrEqual(t, b.clientLog.count(EventPathDown), outages)
		require.Zero(t, b.clientLog.count(EventLost))
		require.Zero(t, b.serverLog.count(EventLost))
	})
}

func TestAddPathBadInput(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newDualBed(t, Config{})
		b.waitPaths(t, 2)
		before := b.client.Paths()
		taken := before[1].Local.String()
		for _, tc := range []struct {
			addr string
			is   error
		}{
			{"nonsense", nil},
			{"10.0.3.1", nil},       // no port
			{"host.example:0", nil}, // not an IP
			{taken, ErrPathExists},
			{before[0].Local.String(), ErrPathExists},
		} {
			err := b.client.AddPath(t.Context(), tc.addr)
			require.Error(t, err, tc.addr)
			var op *OpError
			require.ErrorAs(t, err, &op, tc.addr)
			require.Equal(t, "add path", op.Op)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is, tc.addr)
			}
			t.Logf("%s: %v", tc.addr, err)
		}
		require.Error(t, b.client.RemovePath(before[0].Local.String()), "ListenAddr's path stays")
		require.Error(t, b.client.RemovePath("10.9.9.9:1"), "no such path")
		after := b.waitPaths(t, 2)
		require.Equal(t, before[0].Local, after[0].Local)
		require.Equal(t, before[1].Local, after[1].Local)
		roundTrip(t, b.c, b.sc, "the paths are untouched")
	})
}

// A path removed mid-flow (its address went away) hands its flows to the
// other at once.
func TestRemovePathMidFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newDualBed(t, Config{ListenAddr: dualSecond + ":0", Paths: []string{dualFirst + ":0"}})
		roundTrip(t, b.c, b.sc, "hello")
		_ = b
	})
}

func TestPathsAllDeadThenOneBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newDualBed(t, Config{})
		roundTrip(t, b.c, b.sc, "hello")
		b.waitPaths(t, 2)
		tunnel := false
		start := time.Now()
		transfer(t, b.c, b.sc, motionBytes/4, func(sent int) {
			if sent >= motionBytes/8 && !tunnel {
				tunnel = true
				b.mp.Blackout(35 * time.Second)
				// The second carrier comes back first.
				b.mp.Paths()[1].Blackout(0)
			}
		})
		require.True(t, tunnel)
		_ = start
		require.Zero(t, b.clientLog.count(EventLost))
		require.Zero(t, b.serverLog.count(EventLost))
	})
}

var _ = errors.Is
var _ net.Conn = (*Conn)(nil)
