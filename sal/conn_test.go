package sal

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/nettest"
)

// TestConnConformance runs x/net's net.Conn conformance suite on flows.
func TestConnConformance(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		mem := resolve.NewMemory()
		server, err := NewHost(Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
		if err != nil {
			return nil, nil, nil, err
		}
		client, err := NewHost(Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
		if err != nil {
			server.Close()
			return nil, nil, nil, err
		}
		stop = func() { client.Close(); server.Close() }
		l, err := server.Listen(context.Background(), "pipe.test")
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		type result struct {
			c   *Conn
			err error
		}
		acc := make(chan result, 1)
		go func() {
			c, err := l.AcceptContext(context.Background())
			acc <- result{c, err}
		}()
		dc, err := client.Dial(context.Background(), "pipe.test")
		if err != nil {
			stop()
			<-acc
			return nil, nil, nil, err
		}
		r := <-acc
		if r.err != nil {
			stop()
			return nil, nil, nil, r.err
		}
		return dc, r.c, stop, nil
	})
}

func TestHTTPOverServices(t *testing.T) {
	server, client, l := pair(t, "web.demo")
	_ = server
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from %s", r.RemoteAddr, r.Host)
	})}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	defer func() {
		srv.Close()
		require.ErrorIs(t, <-done, http.ErrServerClosed)
	}()

	tr := &http.Transport{DialContext: client.DialContext}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	resp, err := hc.Get("http://web.demo/")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("hello rk--%s:%d from web.demo", client.Key(), client.LocalAddr().Port()), string(body))
}
