package sal

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/roamnet/roam/mobility"
	"github.com/roamnet/roam/mobility/netns"
	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// TestMonitorDrivenMigration runs a client Host in a real network
// namespace with two interfaces, wifi and cell, and deletes the wifi
// address from under a live flow. A mobility.Monitor inside the namespace
// sees it over netlink, the Host rebinds to the cell address and migrates
// its connection, and the flow delivers every byte: no application code is
// involved.
func TestMonitorDrivenMigration(t *testing.T) {
	topo := netns.New(t) // skips unless root with iproute2

	var mon *mobility.Monitor
	require.NoError(t, topo.Client.Do(func() error {
		var err error
		mon, err = mobility.NewMonitor(mobility.MonitorConfig{
			Policy: mobility.Policy{
				Prefer: []mobility.Kind{mobility.KindWiFi, mobility.KindCellular},
				Classify: func(i mobility.Interface) mobility.Kind {
					switch i.Name {
					case "wifi":
						return mobility.KindWiFi
					case "cell":
						return mobility.KindCellular
					}
					return i.Kind
				},
			},
			// The Monitor's reads run on any thread; this one must look
			// inside the namespace.
			ReadState: func() (s mobility.State, err error) {
				err = topo.Client.Do(func() error {
					s, err = mobility.ReadOSState()
					return err
				})
				return s, err
			},
		})
		return err
	}))
	t.Cleanup(func() { mon.Close() })
	require.Equal(t, netns.ClientWifi.Addr(), mon.Preferred())

	mem := resolve.NewMemory()
	var serverLog, clientLog eventLog
	server := newHost(t, Config{
		Resolver:   mem,
		ListenAddr: netip.AddrPortFrom(netns.ServerAddr, 4433).String(),
		ListenPacket: func(_ context.Context, _, address string) (net.PacketConn, error) {
			return topo.Server.ListenUDP(netip.MustParseAddrPort(address))
		},
		OnEvent: serverLog.record,
	})
	client, err := NewHost(Config{
		Resolver: mem,
		Monitor:  mon, // starts on the wifi address, follows the Monitor
		ListenPacket: func(_ context.Context, _, address string) (net.PacketConn, error) {
			return topo.Client.ListenUDP(netip.MustParseAddrPort(address))
		},
		OnEvent: clientLog.record,
	})
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	require.Equal(t, netns.ClientWifi.Addr(), client.LocalAddr().Addr())

	l, err := server.Listen(testCtx(t), "phone.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "phone.demo")

	const total = 32 << 20
	moved := false
	transfer(t, c, sc, total, func(sent int) {
		if sent >= total/3 && !moved {
			moved = true
			require.NoError(t, topo.Client.DelAddr("wifi", netns.ClientWifi))
			require.Eventually(t, func() bool { return client.LocalAddr().Addr() == netns.ClientCell.Addr() },
				10*time.Second, time.Millisecond, "the Host follows the Monitor to the cell address")
		}
	})
	require.True(t, moved)
	// The probe races a fresh handshake (see Host.migrate); on a busy
	// machine the handshake may answer first, and the flow resumes on it.
	require.Equal(t, 1, clientLog.count(EventMigrated)+clientLog.count(EventReplaced), "the connection migrated, or a fresh one won the race")
	require.Zero(t, clientLog.count(EventLost))
	require.Equal(t, netns.ClientCell.Addr(), sc.RemoteAddr().(Addr).Endpoint.Addr(), "the server sees the client on cell")
}

// TestPathsKernelLinkDown gives a client Host both links of a real
// namespace topology as paths (routing by source address) and takes the
// wifi link down under a transfer: the kernel refuses the next send from
// the wifi address, and the flow moves to the cell path at once, with no
// Monitor and no silence to wait out. Every byte is checked.
func TestPathsKernelLinkDown(t *testing.T) {
	topo := netns.New(t) // skips unless root with iproute2
	mem := resolve.NewMemory()
	var clientLog eventLog
	server := newHost(t, Config{
		Resolver:   mem,
		ListenAddr: netip.AddrPortFrom(netns.ServerAddr, 4433).String(),
		ListenPacket: func(_ context.Context, _, address string) (net.PacketConn, error) {
			return topo.Server.ListenUDP(netip.MustParseAddrPort(address))
		},
	})
	client := newHost(t, Config{
		Resolver:   mem,
		ListenAddr: netip.AddrPortFrom(netns.ClientWifi.Addr(), 0).String(),
		Paths:      []string{netip.AddrPortFrom(netns.ClientCell.Addr(), 0).String()},
		ListenPacket: func(_ context.Context, _, address string) (net.PacketConn, error) {
			return topo.Client.ListenUDP(netip.MustParseAddrPort(address))
		},
		OnEvent: clientLog.record,
	})
	l, err := server.Listen(testCtx(t), "laptop.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "laptop.demo")
	require.Eventually(t, func() bool {
		p := client.Paths()
		return len(p) == 2 && p[0].State == PathUp && p[1].State == PathUp
	}, 10*time.Second, 5*time.Millisecond, "both paths up")

	const total = 32 << 20
	cut := false
	transfer(t, c, sc, total, func(sent int) {
		if sent >= total/3 && !cut {
			cut = true
			require.NoError(t, topo.Client.SetDown("wifi"))
			require.Eventually(t, func() bool { return clientLog.count(EventPathDown) > 0 },
				10*time.Second, time.Millisecond, "the flow leaves the wifi path")
		}
	})
	require.True(t, cut)
	require.Zero(t, clientLog.count(EventLost))
	require.Equal(t, netns.ClientCell.Addr(), sc.RemoteAddr().(Addr).Endpoint.Addr(), "the server sees the client on cell")
	clientLog.mu.Lock()
	i := slices.IndexFunc(clientLog.events, func(e Event) bool { return e.Kind == EventPathDown })
	cause := clientLog.events[i].Err
	clientLog.mu.Unlock()
	// The refused send tells at the next look, unless the silence of a
	// busy stream told first (under the race detector, quic-go's sender
	// may be late to try).
	t.Logf("path down: %v", cause)
	require.True(t, errors.Is(cause, errPathRefused) || errors.Is(cause, errPathDown), "%v", cause)
	client.mu.Lock()
	refused := sendsRefused(client.cur.pc).Load()
	client.mu.Unlock()
	require.NotZero(t, refused, "the wifi socket counted the sends the kernel refused")
	require.Equal(t, PathDown, client.Paths()[0].State)
}
