package dns_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve/dns"
	"github.com/roamnet/roam/resolve/internal/dnstest"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// freshDNS returns a DNS that holds a fresh answer for "web.example".
func freshDNS(tb testing.TB, cfg dns.Config, mode dnstest.Mode) (*dns.Resolver, *dnstest.Server) {
	s := dnstest.NewServer(tb)
	s.SetMode(mode)
	publish(s, "web.example", 443, "192.0.2.1", "2001:db8::1")
	cfg.Servers = []string{s.Addr()}
	d, err := dns.New(cfg)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = d.Close() })
	_, err = d.Resolve(context.Background(), "web.example")
	require.NoError(tb, err)
	return d, s
}

// A fresh answer is served from memory without allocating: the TTL it
// carries changes (and a new slice is made) at most once a second.
func TestDNSFreshDoesNotAllocate(t *testing.T) {
	clock := resolvetest.NewClock()
	d, s := freshDNS(t, dns.Config{Now: clock.Now}, dnstest.Mode{})
	asked := s.Queries()
	ctx := context.Background()
	require.Zero(t, testing.AllocsPerRun(1000, func() { _, _ = d.Resolve(ctx, "web.example") }))
	require.Equal(t, asked, s.Queries())
}

func BenchmarkDNSFresh(b *testing.B) {
	d, _ := freshDNS(b, dns.Config{}, dnstest.Mode{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Resolve(ctx, "web.example"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDNSLookup is an uncached lookup against the loopback server:
// each iteration moves the clock past the TTL. With glue it costs the SRV
// and TXT queries, in parallel; without, A and AAAA queries follow.
func BenchmarkDNSLookup(b *testing.B) {
	for _, bb := range []struct {
		name string
		mode dnstest.Mode
	}{{"glue", dnstest.Mode{}}, {"noglue", dnstest.Mode{NoGlue: true}}} {
		b.Run(bb.name, func(b *testing.B) {
			clock := resolvetest.NewClock()
			d, _ := freshDNS(b, dns.Config{Now: clock.Now}, bb.mode)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				clock.Advance(dnsTTL)
				if _, err := d.Resolve(ctx, "web.example"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
