package netns

import (
	"crypto/sha256"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// checked is a datagram that carries the SHA-256 of its body, so that the
// receiver knows it arrived whole.
func checked(body string) []byte {
	sum := sha256.Sum256([]byte(body))
	return append(sum[:], body...)
}

func unchecked(p []byte) (string, bool) {
	if len(p) < sha256.Size {
		return "", false
	}
	sum := sha256.Sum256(p[sha256.Size:])
	return string(p[sha256.Size:]), string(sum[:]) == string(p[:sha256.Size])
}

// arrivals is a server on ServerAddr that collects the intact datagrams'
// bodies by source address.
type arrivals struct {
	mu     sync.Mutex
	bySrc  map[netip.Addr][]string
	broken int
}

func serve(t *testing.T, topo *Topology) *arrivals {
	t.Helper()
	c, err := topo.Server.ListenUDP(netip.AddrPortFrom(ServerAddr, port))
	require.NoError(t, err)
	a := &arrivals{bySrc: map[netip.Addr][]string{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			body, ok := unchecked(buf[:n])
			a.mu.Lock()
			if ok {
				a.bySrc[src.Addr().Unmap()] = append(a.bySrc[src.Addr().Unmap()], body)
			} else {
				a.broken++
			}
			a.mu.Unlock()
			_, _ = c.WriteToUDPAddrPort(buf[:n], src) // echo, back over the link it came by
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
	return a
}

func (a *arrivals) from(src netip.Addr) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.bySrc[src]...)
}

// roundTrip sends body from c to the server and reports whether its echo
// came back intact within a second.
func roundTrip(t *testing.T, c *net.UDPConn, body string) bool {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(checked(body), netip.AddrPortFrom(ServerAddr, port)); err != nil {
		return false
	}
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Second)))
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return false
		}
		if got, ok := unchecked(buf[:n]); ok && got == body {
			return true
		}
	}
}

// TestTwoLinksToOneAddress uses both links at once, a socket bound to
// each client address, to the server's one address: each socket's
// datagrams arrive from its own address, intact, and its replies come
// back the same way. Cutting one link stops that path alone.
func TestTwoLinksToOneAddress(t *testing.T) {
	topo := New(t)
	links := topo.Links()
	require.Len(t, links, 2)
	rules, err := topo.Client.Command(t.Context(), "ip", "rule", "show").Output()
	require.NoError(t, err)
	for _, l := range links {
		require.Contains(t, string(rules), "from "+l.Client.Masked().String()+" lookup "+strconv.Itoa(l.Table), "policy routing by source")
	}
	srv := serve(t, topo)
	conns := make([]*net.UDPConn, len(links))
	for i, l := range links {
		conns[i] = clientConn(t, topo, netip.AddrPortFrom(l.Client.Addr(), 0))
	}

	send := func(round string, want ...bool) {
		t.Helper()
		for i, l := range links {
			body := round + " over " + l.Dev + " " + strings.Repeat("x", 1000*i)
			require.Equal(t, want[i], roundTrip(t, conns[i], body), "%s: %s", round, l.Dev)
		}
	}
	send("both", true, true)
	require.NoError(t, topo.Cut("wifi"))
	send("wifi cut", false, true)
	require.NoError(t, topo.Restore("wifi"))
	require.NoError(t, topo.Cut("cell"))
	send("cell cut", true, false)
	require.NoError(t, topo.Restore("cell"))
	send("again", true, true)

	for i, l := range links {
		got := srv.from(l.Client.Addr())
		require.NotEmpty(t, got)
		for _, body := range got {
			require.True(t, strings.HasSuffix(body, strings.Repeat("x", 1000*i)) && strings.Contains(body, " over "+l.Dev+" "),
				"%q arrived from %v, not over its own link", body, l.Client.Addr())
		}
	}
	srv.mu.Lock()
	require.Zero(t, srv.broken, "datagrams arrive whole")
	srv.mu.Unlock()
	require.Len(t, srv.from(ClientWifi.Addr()), 3, "wifi's cut round is lost")
	require.Len(t, srv.from(ClientCell.Addr()), 3, "cell's cut round is lost")
}
