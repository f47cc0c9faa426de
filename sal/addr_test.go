package sal

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// requireHostPort checks that a's text is a host:port whose host is a's
// service ID and whose port is a's endpoint's port.
func requireHostPort(t *testing.T, a net.Addr, what string) {
	t.Helper()
	host, port, err := net.SplitHostPort(a.String())
	require.NoError(t, err, "%s %q", what, a)
	id, err := ParseServiceID(host)
	require.NoError(t, err, "%s: the host is a service ID", what)
	require.Equal(t, a.(Addr).Service, id, what)
	p, err := strconv.ParseUint(port, 10, 16)
	require.NoError(t, err, "%s: the port is a number", what)
	require.Equal(t, a.(Addr).Endpoint.Port(), uint16(p), what)
}

func TestAddrString(t *testing.T) {
	for _, tt := range []struct {
		addr Addr
		want string
	}{
		{Addr{Service: MustParseServiceID("echo.demo"), Endpoint: netip.MustParseAddrPort("[2001:db8::1]:7000")}, "echo.demo:7000"},
		{Addr{Service: MustParseServiceID("echo.demo")}, "echo.demo:0"},
		{Addr{}, ":0"},
	} {
		require.Equal(t, tt.want, tt.addr.String())
		_, _, err := net.SplitHostPort(tt.addr.String())
		require.NoError(t, err)
	}
}

// Every address a flow or a Listener reports is a host:port that
// net.SplitHostPort parses (as net/http, reverse proxies and loggers do),
// on both ends; net/http's Request.RemoteAddr is one; and the text dials
// the service back through Host.DialContext.
func TestAddrsAreHostPort(t *testing.T) {
	server, client, l := pair(t, "web.demo")
	requireHostPort(t, l.Addr(), "Listener.Addr")

	remote := make(chan string, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remote <- r.RemoteAddr
		io.WriteString(w, "ok")
	})}
	go srv.Serve(l)
	defer srv.Close()

	c, err := client.Dial(testCtx(t), "web.demo")
	require.NoError(t, err)
	defer c.Close()
	requireHostPort(t, c.LocalAddr(), "dialer's LocalAddr")
	requireHostPort(t, c.RemoteAddr(), "dialer's RemoteAddr")
	_, err = fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: web.demo\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	resp, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Contains(t, string(resp), "ok")

	ra := <-remote
	host, _, err := net.SplitHostPort(ra)
	require.NoError(t, err, "http's Request.RemoteAddr %q", ra)
	require.Equal(t, "rk--"+client.Key().String(), host, "the listener sees the dialer by its key")

	// A listener's view of a flow, without http in between.
	l2, err := server.Listen(testCtx(t), "raw.demo")
	require.NoError(t, err)
	defer l2.Close()
	acc2 := accept(t, l2)
	c2, err := client.DialContext(testCtx(t), l2.Addr().Network(), l2.Addr().String())
	require.NoError(t, err, "an Addr's text dials its service")
	defer c2.Close()
	sc := <-acc2
	require.NotNil(t, sc)
	defer sc.Close()
	requireHostPort(t, sc.LocalAddr(), "listener's LocalAddr")
	requireHostPort(t, sc.RemoteAddr(), "listener's RemoteAddr")
}
