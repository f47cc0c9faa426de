package sal_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// Two Hosts that share an in-memory resolver talk with no other setup: the
// listener registers itself, and its key is pinned by the registration.
func Example() {
	ctx := context.Background()
	mem := resolve.NewMemory()

	server, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer server.Close()
	l, _ := server.Listen(ctx, "echo.demo")
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()

	client, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer client.Close()
	c, err := client.Dial(ctx, "echo.demo")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.CloseWrite()
	reply, _ := io.ReadAll(c)
	fmt.Printf("%s from %s (%s), authenticated: %v\n", reply, c.RemoteAddr().(sal.Addr).Service, c.RemoteAddr().Network(), c.Authenticated())
	// Output: hello from echo.demo (sal), authenticated: true
}

// A self-certifying service ID carries the service's key, so the dialer
// checks the peer even through a resolver that pins nothing.
func ExampleHost_ServiceID() {
	ctx := context.Background()
	server, _ := sal.NewHost(sal.Config{Resolver: resolve.NewMemory(), ListenAddr: "127.0.0.1:0"})
	defer server.Close()
	l, _ := server.Listen(ctx, "pay.demo")
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()

	id, _ := server.ServiceID("pay.demo") // rk--<fingerprint>.pay.demo
	static := resolve.NewStatic(map[string][]netip.AddrPort{"pay.demo": {server.LocalAddr()}})
	client, _ := sal.NewHost(sal.Config{Resolver: static, RequireAuthentication: true})
	defer client.Close()

	c, err := client.Dial(ctx, id.String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println(c.RemoteAddr().(sal.Addr).Service == id, c.Authenticated())
	// Output: true true
}

// Host.DialContext has net.Dialer's shape, and a Listener is a
// net.Listener: net/http runs over services unchanged.
func ExampleHost_DialContext() {
	ctx := context.Background()
	mem := resolve.NewMemory()
	server, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer server.Close()
	l, _ := server.Listen(ctx, "web.demo")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "served %s", r.URL.Path)
	})}
	go srv.Serve(l)
	defer srv.Close()

	client, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer client.Close()
	tr := &http.Transport{DialContext: client.DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://web.demo/hello")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	// Output: served /hello
}

// Rules in the service table override resolution by longest label suffix.
func ExampleServiceTable() {
	var t sal.ServiceTable
	t.Set(sal.Rule{Service: "demo", Action: sal.ActionEndpoints,
		Endpoints: []resolve.Endpoint{{Addr: netip.MustParseAddrPort("127.0.0.1:7000")}}})
	t.Set(sal.Rule{Service: "ads.demo", Action: sal.ActionDrop})

	for _, s := range []string{"echo.demo", "tracker.ads.demo", "other.example"} {
		r, ok := t.Lookup(sal.MustParseServiceID(s))
		fmt.Println(s, ok, r.Action)
	}
	// Output:
	// echo.demo true endpoints
	// tracker.ads.demo true drop
	// other.example false resolve
}
