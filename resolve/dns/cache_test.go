package dns_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/dns"
	"github.com/roamnet/roam/resolve/internal/dnstest"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// DNS keeps answers on the fake clock; network timeouts still run on the
// real one, which is why a DNS whose servers must answer before they fail
// gets patient timeouts, short enough that the failures cost little.

func TestDNSHonoursTTL(t *testing.T) {
	s := dnstest.NewServer(t)
	s.SetSRV(srvName("web.example"), time.Minute, dnstest.SRV{Port: 443, Target: "h.example"})
	setAddrs(s, "h.example", 30*time.Second, "192.0.2.1") // the lowest TTL used
	clock := resolvetest.NewClock()
	d := newDNS(t, dns.Config{Now: clock.Now}, s)
	ctx := context.Background()

	eps, err := d.Resolve(ctx, "web.example")
	require.NoError(t, err)
	require.Equal(t, 30*time.Second, eps[0].TTL)
	asked := s.Queries()

	clock.Advance(20 * time.Second)
	eps, err = d.Resolve(ctx, "web.example")
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, eps[0].TTL, "the TTL counts down")
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = d.Resolve(canceled, "web.example")
	require.NoError(t, err, "a fresh answer needs no live context")
	require.Equal(t, asked, s.Queries(), "no query while fresh")

	clock.Advance(10 * time.Second)
	eps, err = d.Resolve(ctx, "web.example")
	require.NoError(t, err)
	require.Equal(t, 30*time.Second, eps[0].TTL)
	require.Equal(t, 2*asked, s.Queries(), "expired: asked again")
}

func TestDNSMinTTL(t *testing.T) {
	s := dnstest.NewServer(t)
	s.SetSRV(srvName("web.example"), 0, dnstest.SRV{Port: 443, Target: "h.example"})
	setAddrs(s, "h.example", 0, "192.0.2.1")
	for _, tt := range []struct{ min, want time.Duration }{{0, time.Second}, {5 * time.Second, 5 * time.Second}} {
		eps, err := newDNS(t, dns.Config{MinTTL: tt.min}, s).Resolve(context.Background(), "web.example")
		require.NoError(t, err)
		require.Equal(t, tt.want, eps[0].TTL)
	}
}

func TestDNSServesStale(t *testing.T) {
	s := dnstest.NewServer(t)
	publish(s, "web.example", 443, "192.0.2.1")
	clock := resolvetest.NewClock()
	var log resolvetest.LogBuffer
	cfg := patient
	cfg.Now, cfg.MaxStale, cfg.Logger = clock.Now, 10*time.Minute, log.Logger()
	d := newDNS(t, cfg, s)
	ctx := context.Background()
	_, err := d.Resolve(ctx, "web.example")
	require.NoError(t, err)
	// Each lookup, and so each refresh, asks for the SRV record once.
	srvQueries := func() int { return s.Count(srvName("web.example"), dnsmessage.TypeSRV) }
	require.Equal(t, 1, srvQueries())

	s.SetMode(dnstest.Mode{Drop: true}) // the server is gone
	clock.Advance(dnsTTL)
	eps, err := d.Resolve(ctx, "web.example")
	require.NoError(t, err, "stale beats nothing")
	require.Equal(t, []string{"192.0.2.1:443"}, addrsOf(eps))
	require.Equal(t, 30*time.Second, eps[0].TTL, "until the next retry")
	waitRefreshes(t, &log, 1)
	waitSRVQueries(t, srvQueries, 2, "a refresh was tried")

	clock.Advance(10 * time.Second)
	_, err = d.Resolve(ctx, "web.example")
	require.NoError(t, err)
	require.Equal(t, 2, srvQueries(), "no retry within 30s of a failure")

	clock.Advance(20 * time.Second)
	_, err = d.Resolve(ctx, "web.example")
	require.NoError(t, err)
	waitRefreshes(t, &log, 2)
	waitSRVQueries(t, srvQueries, 3, "retried")

	clock.Advance(10 * time.Minute) // past MaxStale
	_, err = d.Resolve(ctx, "web.example")
	require.ErrorContains(t, err, "stale answer expired")
	require.ErrorIs(t, err, dns.ErrFailure)
	var de *dns.QueryError
	require.ErrorAs(t, err, &de)
	require.True(t, de.Timeout())

	s.SetMode(dnstest.Mode{}) // back
	_, err = d.Resolve(ctx, "web.example")
	require.NoError(t, err)
}

// waitRefreshes waits until n refreshes have failed and left the stale
// answer in place, which DNS logs as it files the failure. A Resolve
// holding a stale answer returns after one Timeout even if its refresh is
// still running; a later Resolve would join that refresh rather than start
// one, and a refresh that ended after the test moved the fake clock on
// would time its retry from there.
func waitRefreshes(t *testing.T, log *resolvetest.LogBuffer, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return log.Count("refresh failed; serving the stale answer") >= n },
		5*time.Second, time.Millisecond, "refresh %d did not end", n)
	require.Equal(t, n, log.Count("refresh failed; serving the stale answer"))
}

// waitSRVQueries waits until the server has counted want SRV queries: it
// counts each when it reads it, which may trail the refresh that sent it.
func waitSRVQueries(t *testing.T, srvQueries func() int, want int, msg string) {
	t.Helper()
	require.Eventually(t, func() bool { return srvQueries() >= want }, 5*time.Second, time.Millisecond, msg)
	require.Equal(t, want, srvQueries(), msg)
}

func TestDNSNeverStale(t *testing.T) {
	s := dnstest.NewServer(t)
	publish(s, "web.example", 443, "192.0.2.1")
	clock := resolvetest.NewClock()
	// SERVFAIL comes back at once: the default Timeout costs nothing.
	d := newDNS(t, dns.Config{Now: clock.Now, MaxStale: -1}, s)
	_, err := d.Resolve(context.Background(), "web.example")
	require.NoError(t, err)

	s.SetMode(dnstest.Mode{RCode: dnsmessage.RCodeServerFailure})
	clock.Advance(dnsTTL)
	_, err = d.Resolve(context.Background(), "web.example")
	require.ErrorIs(t, err, dns.ErrFailure)
}

// NXDOMAIN is the zone's word: what was known is dropped, not served stale.
func TestDNSNotFoundDropsAnswer(t *testing.T) {
	s := dnstest.NewServer(t)
	publish(s, "web.example", 443, "192.0.2.1")
	clock := resolvetest.NewClock()
	cfg := patient
	cfg.Now = clock.Now
	d := newDNS(t, cfg, s)
	_, err := d.Resolve(context.Background(), "web.example")
	require.NoError(t, err)

	s.SetSRV(srvName("web.example"), dnsTTL) // withdrawn
	clock.Advance(dnsTTL)
	_, err = d.Resolve(context.Background(), "web.example")
	require.ErrorIs(t, err, resolve.ErrNotFound)

	s.SetMode(dnstest.Mode{Drop: true})
	_, err = d.Resolve(context.Background(), "web.example")
	require.ErrorIs(t, err, dns.ErrFailure, "nothing stale left to serve")
	require.NotContains(t, err.Error(), "stale")
}

func TestDNSCollapsesConcurrentLookups(t *testing.T) {
	resolveAll := func(d *dns.Resolver) {
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() { _, _ = d.Resolve(context.Background(), "web.example") })
		}
		wg.Wait()
	}
	srvQueries := func(s *dnstest.Server) int { return s.Count(srvName("web.example"), dnsmessage.TypeSRV) }

	t.Run("miss", func(t *testing.T) {
		// A silent server keeps the lookup open (one Timeout) while all
		// callers arrive.
		s := dnstest.NewServer(t)
		s.SetMode(dnstest.Mode{Drop: true})
		d := newDNS(t, dns.Config{Timeout: 200 * time.Millisecond, Attempts: 1}, s)
		resolveAll(d)
		require.Equal(t, 1, srvQueries(s))
	})
	t.Run("refresh", func(t *testing.T) {
		s := dnstest.NewServer(t)
		publish(s, "web.example", 443, "192.0.2.1")
		clock := resolvetest.NewClock()
		d := newDNS(t, dns.Config{Now: clock.Now}, s)
		resolveAll(d)
		require.Equal(t, 1, srvQueries(s))
		clock.Advance(dnsTTL)
		resolveAll(d)
		require.Equal(t, 2, srvQueries(s))
	})
}
