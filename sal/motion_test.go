package sal

import (
	"fmt"
	"net/netip"
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

// motionBytes is how much each test streams each way.
var motionBytes = 256 << 20

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
		progress, done := spread(motionBytes, moves, func(i int) {
			b.moveClient(t)
		})
		transfer(t, b.c, b.sc, motionBytes, progress)
		require.Equal(t, moves, *done)
		require.Equal(t, moves, b.clientLog.count(EventMigrated), "each rebind migrates the connection")
		b.requireNoLoss(t)
	})
}

func TestMotionServerMoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, calm, Config{})
		const moves = 20
		progress, done := spread(motionBytes, moves, func(i int) {
			b.moveServer(t)
		})
		transfer(t, b.c, b.sc, motionBytes, progress)
		require.Equal(t, moves, *done)
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
		progress, done := spread(motionBytes, moves, func(i int) {
			require.NoError(t, server.Rebind(t.Context(), fmt.Sprintf("10.0.0.%d:443", 1+i)))
		})
		transfer(t, c, sc, motionBytes, progress)
		require.Equal(t, moves, *done)
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
		progress, done := spread(motionBytes, rebinds, func(i int) {
			b.path.Rebind() // the server sees the client on a new port
		})
		transfer(t, b.c, b.sc, motionBytes, progress)
		require.Equal(t, rebinds, *done)
		b.requireNoLoss(t)
	})
}

func TestMotionLossyHandovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, calm, Config{})
		lossy := emu.LinkConfig{Delay: 10 * time.Millisecond, Loss: 0.05}
		const handovers = 10
		progress, done := spread(motionBytes, handovers, func(i int) {
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
		transfer(t, b.c, b.sc, motionBytes, progress)
		require.Equal(t, handovers, *done)
		b.requireNoLoss(t)
	})
}
