package sal_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// A device with two modems gives its Host both addresses: the flows ride
// the first, and a validated connection on the second stands by to take
// them over the moment the first stops answering. (Here both paths are
// loopback sockets.)
func ExampleConfig_paths() {
	ctx := context.Background()
	mem := resolve.NewMemory()
	server, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer server.Close()
	l, _ := server.Listen(ctx, "video.demo")
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()

	client, err := sal.NewHost(sal.Config{
		Resolver:   mem,
		ListenAddr: "127.0.0.1:0",           // the first modem's address
		Paths:      []string{"127.0.0.1:0"}, // the second's; AddPath and RemovePath change them later
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	c, err := client.Dial(ctx, "video.demo")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.Write([]byte("frame"))
	buf := make([]byte, 5)
	io.ReadFull(c, buf)

	// The standby comes up in the background.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if p := client.Paths(); p[1].State == sal.PathUp {
			break
		}
	}
	for i, p := range client.Paths() {
		fmt.Printf("path %d: %s, %d flow(s)\n", i, p.State, p.Flows)
	}
	// Output:
	// path 0: up, 1 flow(s)
	// path 1: up, 0 flow(s)
}
