package sal

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// These tests move paths under live flows in the in-memory network of
// mobility/emu, inside testing/synctest: virtual time, so a 30 s blackout
// costs no wall time and every run is the same. Each checks every byte in
// both directions with SHA-256.

// motionBytes is how much each test streams each way: 16 MiB, twice a
// flow's default send buffer (Config.FlowBuffer), so that the writers wait
// on acknowledgements through the motion, as a long transfer does. The soak
// (ROAM_SOAK=1, which CI runs without the race detector) streams 256 MiB:
// under -race that took 17-52 s a test, 160 s for the six.
var motionBytes = 16 << 20

// soak is set by ROAM_SOAK=1: the motion tests stream 256 MiB each way.
var soak = os.Getenv("ROAM_SOAK") == "1"

func init() {
	if soak {
		motionBytes = 256 << 20
	}
}

// motion streams motionBytes each way over c and sc, and calls move n
// times, evenly spaced over the dialer's bytes. It checks every byte, that
// all n moves came, and that they came mid-transfer: most with bytes the
// dialer had written and the listener not yet read (all of them in runs
// of 8 to 256 MiB, but one of twenty server rebinds at 256 MiB, which came
// just after a resume had caught up).
func motion(t *testing.T, c, sc *Conn, n int, move func(i int)) {
	t.Helper()
	done, inFlight := 0, 0
	transferWatched(t, c, sc, motionBytes, func(p transferProgress) {
		if done < n && p.sent >= (done+1)*motionBytes/(n+1) {
			done++
			if p.sent > p.received {
				inFlight++
			}
			move(done)
		}
	})
	require.Equal(t, n, done)
	require.Greater(t, 2*inFlight, n, "moves with the dialer's bytes in flight, of %d", n)
}

// bed is a server Host behind an emulated path and a client Host.
type bed struct {
	nw             *emu.Network
	path           *emu.Path
	server, client *Host
	mem            *resolve.Memory
	c, sc          *Conn
	serverLog      eventLog
	clientLog      eventLog
	clientAddrs    int
	dead           *emu.DeadAddrs // set by handover
}

func newBed(t *testing.T, link emu.LinkConfig, clientCfg Config) *bed {
	return newBedWith(t, link, Config{}, clientCfg)
}

// newBedWith is newBed with the server's Config too.
func newBedWith(t *testing.T, link emu.LinkConfig, serverCfg, clientCfg Config) *bed {
	b := &bed{nw: emu.NewNetwork(1), mem: resolve.NewMemory()}
	t.Cleanup(func() { b.nw.Close() })
	serverAddr := netip.MustParseAddrPort("10.0.0.1:443")
	var err error
	b.path, err = b.nw.NewPath(serverAddr, emu.PathConfig{Up: link, Down: link})
	require.NoError(t, err)
	serverCfg.Resolver = b.mem
	serverCfg.ListenAddr = serverAddr.String()
	serverCfg.ListenPacket = b.nw.ListenPacket
	serverCfg.AdvertiseAddr = b.path.ServerAddr() // clients reach the server through the path
	serverCfg.OnEvent = b.serverLog.record
	b.server = newHost(t, serverCfg)
	clientCfg.Resolver = b.mem
	clientCfg.ListenAddr = "10.0.1.1:0"
	clientCfg.ListenPacket = b.nw.ListenPacket
	clientCfg.OnEvent = b.clientLog.record
	b.client = newHost(t, clientCfg)
	l, err := b.server.Listen(t.Context(), "motion.demo")
	require.NoError(t, err)
	b.c, b.sc = openPair(t, b.client, l, "motion.demo")
	return b
}

// moveClient gives the client Host a new local address.
func (b *bed) moveClient(t *testing.T) {
	b.clientAddrs++
	addr := fmt.Sprintf("10.0.%d.%d:0", 1+b.clientAddrs/250, 1+b.clientAddrs%250)
	require.NoError(t, b.client.Rebind(t.Context(), addr))
}

// moveServer gives the server a new public address and re-registers it.
func (b *bed) moveServer(t *testing.T) {
	require.NoError(t, b.path.MoveServer())
	require.NoError(t, b.server.SetAdvertiseAddr(t.Context(), b.path.ServerAddr()))
}

func (b *bed) requireNoLoss(t *testing.T) {
	require.Zero(t, b.clientLog.count(EventLost))
	require.Zero(t, b.serverLog.count(EventLost))
}

var calm = emu.LinkConfig{Delay: 10 * time.Millisecond}

func TestMotionClientRebinds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, calm, Config{})
		const moves = 100
		motion(t, b.c, b.sc, moves, func(i int) {
			b.moveClient(t)
		})
		require.Equal(t, moves, b.clientLog.count(EventMigrated), "each rebind migrates the connection")
		b.requireNoLoss(t)
	})
}

func TestMotionServerMoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, calm, Config{})
		const moves = 20
		motion(t, b.c, b.sc, moves, func(i int) {
			b.moveServer(t)
		})
		require.NotZero(t, b.c.Stats().Resumes, "flows follow the server through the watch")
		b.requireNoLoss(t)
	})
}

// TestMotionServerRebinds moves the server Host itself, 20 times, to new
// local addresses (Host.Rebind), with no path in between: each time its
// inbound connections close with "moved", it registers its new address,
// and the client's flows resume there.
func TestMotionServerRebinds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := emu.NewNetwork(2)
		defer nw.Close()
		mem := resolve.NewMemory()
		var clientLog eventLog
		server := newHost(t, Config{Resolver: mem, ListenAddr: "10.0.0.1:443", ListenPacket: nw.ListenPacket})
		client := newHost(t, Config{Resolver: mem, ListenAddr: "10.0.1.1:0", ListenPacket: nw.ListenPacket, OnEvent: clientLog.record})
		l, err := server.Listen(t.Context(), "motion.demo")
		require.NoError(t, err)
		c, sc := openPair(t, client, l, "motion.demo")
		const moves = 20
		motion(t, c, sc, moves, func(i int) {
			require.NoError(t, server.Rebind(t.Context(), fmt.Sprintf("10.0.0.%d:443", 1+i)))
		})
		require.NotZero(t, c.Stats().Resumes)
		require.Zero(t, clientLog.count(EventLost))
		require.Equal(t, server.LocalAddr(), c.RemoteAddr().(Addr).Endpoint, "the flow follows the server")
	})
}

func TestMotionBlackout30s(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, calm, Config{})
		blackedOut := false
		start := time.Now()
		transfer(t, b.c, b.sc, motionBytes, func(sent int) {
			if sent >= motionBytes/2 && !blackedOut {
				blackedOut = true
				b.path.Blackout(30 * time.Second)
			}
		})
		require.True(t, blackedOut)
		require.Greater(t, time.Since(start), 30*time.Second, "the transfer waited out the tunnel")
		b.requireNoLoss(t)
	})
}

func TestMotionNATRebinding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, calm, Config{})
		const rebinds = 50
		motion(t, b.c, b.sc, rebinds, func(i int) {
			b.path.Rebind() // the server sees the client on a new port
		})
		b.requireNoLoss(t)
	})
}

func TestMotionLossyHandovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, calm, Config{})
		lossy := emu.LinkConfig{Delay: 10 * time.Millisecond, Loss: 0.05}
		const handovers = 10
		motion(t, b.c, b.sc, handovers, func(i int) {
			// 5% loss in both directions around each handover.
			b.path.Configure(emu.Up, lossy)
			b.path.Configure(emu.Down, lossy)
			b.path.Handover(100 * time.Millisecond)
			b.moveClient(t) // the device's own address changes with the cell
			time.AfterFunc(2*time.Second, func() {
				b.path.Configure(emu.Up, calm)
				b.path.Configure(emu.Down, calm)
			})
		})
		b.requireNoLoss(t)
	})
}
