package netns

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Every datagram these tests send goes to an address inside namespaces
// they made: 10.199.0.0/16 exists nowhere else.

const port = 4433

// listener is a UDP server in the server namespace that reports the
// source address of each datagram.
func listener(t *testing.T, topo *Topology) <-chan netip.AddrPort {
	t.Helper()
	c, err := topo.Server.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), port))
	require.NoError(t, err)
	from := make(chan netip.AddrPort, 1024)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			_, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case from <- netip.AddrPortFrom(src.Addr().Unmap(), src.Port()):
			default:
			}
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
	return from
}

func clientConn(t *testing.T, topo *Topology, local netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := topo.Client.ListenUDP(local)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// sendFrom sends one datagram to the server and returns the source the
// server saw, or false after a second.
func sendFrom(t *testing.T, c *net.UDPConn, from <-chan netip.AddrPort) (netip.AddrPort, bool) {
	t.Helper()
	_, err := c.WriteToUDPAddrPort([]byte("hi"), netip.AddrPortFrom(ServerAddr, port))
	if err != nil {
		return netip.AddrPort{}, false // e.g. no route
	}
	select {
	case src := <-from:
		return src, true
	case <-time.After(time.Second):
		return netip.AddrPort{}, false
	}
}

func TestTopologyPaths(t *testing.T) {
	topo := New(t)
	from := listener(t, topo)
	c := clientConn(t, topo, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))

	src, ok := sendFrom(t, c, from)
	require.True(t, ok)
	require.Equal(t, ClientWifi.Addr(), src.Addr(), "wifi is preferred")

	require.NoError(t, topo.Client.SetDown("wifi"))
	src, ok = sendFrom(t, c, from)
	require.True(t, ok)
	require.Equal(t, ClientCell.Addr(), src.Addr(), "without wifi, cell")

	require.NoError(t, topo.Client.SetUp("wifi"))
	require.NoError(t, topo.RouteWifi())
	src, ok = sendFrom(t, c, from)
	require.True(t, ok)
	require.Equal(t, ClientWifi.Addr(), src.Addr(), "wifi again")

	// A socket bound to the cell address leaves over cell, wifi or not.
	cell := clientConn(t, topo, netip.AddrPortFrom(ClientCell.Addr(), 0))
	src, ok = sendFrom(t, cell, from)
	require.True(t, ok)
	require.Equal(t, ClientCell.Addr(), src.Addr())

	require.NoError(t, topo.Client.SetDown("cell"))
	_, ok = sendFrom(t, cell, from)
	require.False(t, ok, "its link is down")
}

func TestAddrChanges(t *testing.T) {
	topo := New(t)
	from := listener(t, topo)
	renewed := netip.MustParsePrefix("10.199.1.77/24") // a new DHCP lease

	require.NoError(t, topo.Client.AddAddr("wifi", renewed))
	c := clientConn(t, topo, netip.AddrPortFrom(renewed.Addr(), 0))
	src, ok := sendFrom(t, c, from)
	require.True(t, ok)
	require.Equal(t, renewed.Addr(), src.Addr())

	require.NoError(t, topo.Client.DelAddr("wifi", renewed))
	_, ok = sendFrom(t, c, from)
	require.False(t, ok, "the address is gone")
	_, err := topo.Client.ListenUDP(netip.AddrPortFrom(renewed.Addr(), 0))
	require.Error(t, err)
	require.Error(t, topo.Client.DelAddr("wifi", renewed), "errors carry ip's message")
}

// TestShape checks that tbf limits a link's rate, loosely: a flood of
// datagrams for a second comes out at the rate, within 20%.
func TestShape(t *testing.T) {
	topo := New(t)
	const rate = 8_000_000
	require.NoError(t, topo.Client.Shape("cell", Shaping{Rate: rate}))

	s, err := topo.Server.ListenUDP(netip.AddrPortFrom(ServerAddr, port))
	require.NoError(t, err)
	var mu sync.Mutex
	var bytes int
	var first, last time.Time
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, err := s.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			if first.IsZero() {
				first = time.Now()
			} else {
				bytes += n
			}
			last = time.Now()
			mu.Unlock()
		}
	})
	defer wg.Wait()
	defer s.Close()

	c := clientConn(t, topo, netip.AddrPortFrom(ClientCell.Addr(), 0))
	msg := make([]byte, 1000)
	start := time.Now()
	for time.Since(start) < time.Second {
		for range 4 { // 4 kB per ms: four times the rate
			_, _ = c.WriteToUDPAddrPort(msg, netip.AddrPortFrom(ServerAddr, port))
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	got := float64(bytes*8) / last.Sub(first).Seconds()
	mu.Unlock()
	t.Logf("tbf at %d bit/s: measured %.0f bit/s (UDP payload)", rate, got)
	require.InEpsilon(t, rate, got, 0.2)
	require.NoError(t, topo.Client.Unshape("cell"))
	require.Error(t, topo.Client.Shape("cell", Shaping{}))
}

func TestCommandRunsInside(t *testing.T) {
	topo := New(t)
	out, err := topo.Client.Command(context.Background(), "ip", "-o", "addr", "show", "dev", "cell").Output()
	require.NoError(t, err)
	require.Contains(t, string(out), ClientCell.String())

	var names []string
	require.NoError(t, topo.Server.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	}))
	slices.Sort(names)
	require.Equal(t, []string{"cell", "lo", "wifi"}, names)
	require.Panics(t, func() { _ = topo.Server.Do(func() error { panic("boom") }) })
	require.NoError(t, topo.Server.Do(func() error { return nil }), "Do still works after a panic")
}

// rootLinks lists the interfaces of this process's namespace.
func rootLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	require.NoError(t, err)
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	return names
}

// TestCleanup checks that nothing is left behind: no namespace and no
// link, after a passing test, a failing one, and one that panics.
func TestCleanup(t *testing.T) {
	if os.Getenv("ROAM_NETNS_CHILD") != "" {
		topo := New(t)
		os.Stdout.WriteString("NAMES " + topo.Client.Name + " " + topo.Server.Name + "\n")
		switch os.Getenv("ROAM_NETNS_CHILD") {
		case "fail":
			t.Fatal("failing on purpose")
		case "panic":
			panic("panicking on purpose")
		}
		return
	}
	if err := Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	linksBefore := rootLinks(t)
	for _, mode := range []string{"pass", "fail", "panic"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestCleanup$", "-test.count=1")
			cmd.Env = append(os.Environ(), "ROAM_NETNS_CHILD="+mode)
			out, err := cmd.CombinedOutput()
			if mode == "pass" {
				require.NoError(t, err, "%s", out)
			} else {
				require.Error(t, err, "the child should have failed")
			}
			var names []string
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				if rest, ok := strings.CutPrefix(sc.Text(), "NAMES "); ok {
					names = strings.Fields(rest)
				}
			}
			require.Len(t, names, 2, "the child made no topology:\n%s", out)
			left, err := List()
			require.NoError(t, err)
			for _, n := range names {
				require.NotContains(t, left, n, "namespace %s left behind", n)
			}
			require.Equal(t, linksBefore, rootLinks(t), "links left behind")
		})
	}
}

func TestAvailableSaysWhy(t *testing.T) {
	if err := Available(); err != nil {
		require.ErrorIs(t, err, ErrUnavailable)
		require.NotEqual(t, ErrUnavailable.Error(), err.Error(), "a reason is given")
	}
}
