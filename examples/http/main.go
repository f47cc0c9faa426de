// Command http serves HTTP on a roam service and fetches it by service
// name: net/http needs nothing but a Listener and a DialContext.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

func main() {
	n := flag.Int("n", 3, "requests to make")
	flag.Parse()
	log.SetFlags(0)
	ctx := context.Background()

	mem := resolve.NewMemory()
	server, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	check(err)
	defer server.Close()
	l, err := server.Listen(ctx, "web.demo")
	check(err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, %s: you asked %s for %s\n", r.RemoteAddr, r.Host, r.URL.Path)
	})}
	go srv.Serve(l)
	defer srv.Close()

	client, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	check(err)
	defer client.Close()
	tr := &http.Transport{DialContext: client.DialContext}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	for i := range *n {
		resp, err := hc.Get(fmt.Sprintf("http://web.demo/page/%d", i))
		check(err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		check(err)
		fmt.Print(resp.Status, ": ", string(body))
	}
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
