// Command echo shows roam's core in one screen: a service is dialed by its
// name, not by an address, and the bytes come back checksummed.
//
// With no flags it runs both ends in one process over an in-memory resolver.
// To run the ends in two processes:
//
//	go run ./examples/echo -serve -listen 127.0.0.1:7000 -identity echo.pem
//	go run ./examples/echo -peer 127.0.0.1:7000 -key <fingerprint printed by the server>
//
// With -identity the server keeps its key in a file (sal.LoadKey makes it
// on first use), so the fingerprint its clients pin survives a restart.
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/signal"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

func main() {
	serve := flag.Bool("serve", false, "only serve echo.demo")
	listen := flag.String("listen", "127.0.0.1:0", "UDP address of this Host")
	peer := flag.String("peer", "", "only dial echo.demo at this ip:port")
	key := flag.String("key", "", "with -peer: the server's key fingerprint, to authenticate it")
	identity := flag.String("identity", "", "with -serve: PEM file of the server's key, made on first use (default: a new key each start)")
	size := flag.Int("size", 16<<20, "bytes to send")
	flag.Parse()
	log.SetFlags(0)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	switch {
	case *serve:
		cfg := sal.Config{Resolver: resolve.NewMemory(), ListenAddr: *listen}
		if *identity != "" {
			key, err := sal.LoadKey(*identity)
			check(err)
			cfg.Key = key
		}
		h, err := sal.NewHost(cfg)
		check(err)
		defer h.Close()
		l, err := h.Listen(ctx, "echo.demo")
		check(err)
		fmt.Printf("serving echo.demo on %s, key %s\n", h.LocalAddr(), h.Key())
		go serveEcho(ctx, l)
		<-ctx.Done()
	case *peer != "":
		ap, err := netip.ParseAddrPort(*peer)
		check(err)
		h, err := sal.NewHost(sal.Config{
			Resolver: resolve.NewStatic(map[string][]netip.AddrPort{"echo.demo": {ap}}),
		})
		check(err)
		defer h.Close()
		service := "echo.demo"
		if *key != "" {
			service = "rk--" + *key + ".echo.demo" // self-certifying: the peer must hold this key
		}
		check(roundTrip(ctx, h, service, *size))
	default:
		mem := resolve.NewMemory()
		server, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: *listen})
		check(err)
		defer server.Close()
		l, err := server.Listen(ctx, "echo.demo")
		check(err)
		go serveEcho(ctx, l)
		client, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
		check(err)
		defer client.Close()
		check(roundTrip(ctx, client, "echo.demo", *size))
	}
}

func serveEcho(ctx context.Context, l *sal.Listener) {
	for {
		c, err := l.AcceptContext(ctx)
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c) // until the dialer half-closes
		}()
	}
}

// roundTrip sends size random bytes to service and checks that the same
// bytes come back.
func roundTrip(ctx context.Context, h *sal.Host, service string, size int) error {
	start := time.Now()
	c, err := h.Dial(ctx, service)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("dialed %s at %s in %v (authenticated: %v)\n",
		c.RemoteAddr().(sal.Addr).Service, c.RemoteAddr().(sal.Addr).Endpoint, time.Since(start).Round(time.Microsecond), c.Authenticated())

	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{}).Read(data)
	go func() {
		c.Write(data)
		c.CloseWrite()
	}()
	start = time.Now()
	sum := sha256.New()
	n, err := io.Copy(sum, c)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	want := sha256.Sum256(data)
	if n != int64(size) || string(sum.Sum(nil)) != string(want[:]) {
		return fmt.Errorf("echo mismatch: got %d bytes", n)
	}
	fmt.Printf("echoed %d bytes byte-exact (sha256 %x…) in %v, %.0f MB/s each way\n",
		n, want[:6], elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds()/1e6)
	return nil
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
