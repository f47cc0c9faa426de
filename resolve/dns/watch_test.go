package dns_test

import (
	"context"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/dns"
	"github.com/roamnet/roam/resolve/internal/dnstest"
	"github.com/roamnet/roam/sal"
)

// A DNS watch polls at the TTL: a republished address reaches the watcher
// within about one TTL, and a server gone for longer than MaxStale ends
// the watch.
func TestDNSWatch(t *testing.T) {
	const ttl = 100 * time.Millisecond
	s := dnstest.NewServer(t)
	s.SetSRV(srvName("mover.example"), ttl, dnstest.SRV{Port: 443, Target: "h.mover.example"})
	setAddrs(s, "h.mover.example", ttl, "192.0.2.1")
	d, err := dns.New(dns.Config{
		Servers: []string{s.Addr()}, MinTTL: ttl, MaxStale: 500 * time.Millisecond,
		Timeout: 50 * time.Millisecond, Attempts: 1,
	})
	require.NoError(t, err)
	defer d.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := d.Watch(ctx, "mover.example")
	require.NoError(t, err)
	require.Equal(t, []string{"192.0.2.1:443"}, addrsOf(<-ch))

	moved := time.Now()
	setAddrs(s, "h.mover.example", ttl, "192.0.2.2")
	select {
	case eps := <-ch:
		require.Equal(t, []string{"192.0.2.2:443"}, addrsOf(eps))
		require.Less(t, time.Since(moved), 10*ttl, "within about one TTL")
	case <-time.After(5 * time.Second):
		t.Fatal("no update")
	}

	// Withdrawn: the watch pushes the empty set.
	s.SetSRV(srvName("mover.example"), ttl)
	select {
	case eps := <-ch:
		require.Empty(t, eps)
	case <-time.After(5 * time.Second):
		t.Fatal("no update after withdrawal")
	}

	// The server gone: the set stands while stale, then the watch ends.
	s.SetSRV(srvName("mover.example"), ttl, dnstest.SRV{Port: 443, Target: "h.mover.example"})
	require.Eventually(t, func() bool {
		select {
		case eps := <-ch:
			return len(eps) == 1
		default:
			return false
		}
	}, 5*time.Second, 10*time.Millisecond)
	s.SetMode(dnstest.Mode{Drop: true})
	select {
	case _, ok := <-ch:
		require.False(t, ok, "the watch ends once the answer is too stale")
	case <-time.After(10 * time.Second):
		t.Fatal("the watch outlived MaxStale")
	}
}

// Two Hosts meet through DNS (opened by URL): the provider's address is
// published by hand, as an operator would, and when the provider Rebinds
// and the record follows it, a live flow moves too, byte-exact.
func TestDNSHosts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const ttl = time.Second // the floor New puts under TTLs by default
	s := dnstest.NewServer(t)
	open := func() resolve.Resolver {
		r, err := resolve.Open(ctx, "dns://"+s.Addr()+"/")
		require.NoError(t, err)
		t.Cleanup(func() { r.(*dns.Resolver).Close() })
		return r
	}
	provider, err := sal.NewHost(sal.Config{Resolver: open(), ListenAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	defer provider.Close()
	client, err := sal.NewHost(sal.Config{Resolver: open(), ListenAddr: "127.0.0.1:0", RequireAuthentication: true})
	require.NoError(t, err)
	defer client.Close()
	publishHost := func() {
		ap := provider.LocalAddr()
		s.SetSRV(srvName("dns.demo"), ttl, dnstest.SRV{Port: ap.Port(), Target: "h.dns.demo"})
		s.SetAddrs("h.dns.demo", ttl, ap.Addr())
		s.SetTXT(srvName("dns.demo"), ttl, "key="+provider.Key().String())
	}
	publishHost()
	ln, err := provider.Listen(ctx, "dns.demo")
	require.NoError(t, err)
	defer ln.Close()

	const size = 4 << 20
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.AcceptContext(ctx)
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		got <- [32]byte(h.Sum(nil))
	}()
	c, err := client.Dial(ctx, "dns.demo")
	require.NoError(t, err)
	require.True(t, c.Authenticated(), "the TXT record pins the provider's key")
	defer c.Close()
	_, err = c.Write(payload[:size/2])
	require.NoError(t, err)
	require.NoError(t, provider.Rebind(ctx, "127.0.0.1:0"))
	publishHost()
	_, err = c.Write(payload[size/2:])
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	select {
	case sum := <-got:
		require.Equal(t, sha256.Sum256(payload), sum)
	case <-ctx.Done():
		t.Fatal("transfer did not finish")
	}
}
