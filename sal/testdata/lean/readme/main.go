// The README's first sample, as a program: what a user who copies it
// links (TestLeanImports measures it beside ../quicgo).
package main

import (
	"context"
	"io"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

func main() {
	ctx := context.Background()
	mem := resolve.NewMemory()
	server, _ := sal.NewHost(sal.Config{Resolver: mem})
	l, _ := server.Listen(ctx, "echo.demo")
	go func() {
		c, _ := l.Accept()
		io.Copy(c, c)
	}()
	client, _ := sal.NewHost(sal.Config{Resolver: mem})
	c, _ := client.Dial(ctx, "echo.demo")
	c.Write([]byte("hello"))
}
