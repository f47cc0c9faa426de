package sal_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// Ping asks an endpoint whether it serves a service, over the connection
// flows would use, without opening a flow. resolve.NewHealth uses a Host
// as its Prober this way.
func ExampleHost_Ping() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mem := resolve.NewMemory()
	server, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer server.Close()
	l, _ := server.Listen(ctx, "echo.demo")
	defer l.Close()
	client, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer client.Close()

	ep := resolve.Endpoint{Addr: server.LocalAddr(), Key: server.Key()}
	rtt, err := client.Ping(ctx, "echo.demo", ep)
	fmt.Println("echo.demo served:", err == nil, rtt > 0)
	_, err = client.Ping(ctx, "other.demo", ep)
	fmt.Println("other.demo:", errors.Is(err, sal.ErrNoListener))
	// Output:
	// echo.demo served: true true
	// other.demo: true
}

// Each Host counts flows, bytes and resumes per service. The same figures
// are published with expvar, in the map "roam" (served at /debug/vars by
// any program that imports expvar and runs an HTTP server).
func ExampleHost_ServiceStats() {
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
	c.Write([]byte("hello"))
	c.CloseWrite()
	io.ReadAll(c)
	c.Close()

	st := client.ServiceStats()["echo.demo"]
	fmt.Printf("dialed %d, sent %d bytes, received %d\n", st.FlowsDialed, st.BytesSent, st.BytesReceived)
	// Output: dialed 1, sent 5 bytes, received 5
}
