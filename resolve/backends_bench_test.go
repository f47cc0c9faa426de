package resolve_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/dnstest"
	"github.com/roamnet/roam/sal"
	"github.com/roamnet/roam/sal/saltest"
)

// BenchmarkBackends compares this package's backends in one run; the etcd
// module's BenchmarkBackends measures etcd the same way.
func BenchmarkBackends(b *testing.B) {
	saltest.BenchBackends(b, benchBackends(b))
}

func benchBackends(b *testing.B) []saltest.BenchBackend {
	reg := startRegistry(b, resolve.RegistryConfig{})
	openRegistry := func(b *testing.B) resolve.Resolver {
		r, err := resolve.Open(context.Background(), reg.URL())
		require.NoError(b, err)
		b.Cleanup(func() { r.(*resolve.RegistryClient).Close() })
		return r
	}

	// DNS answers carry a 1 s TTL (NewDNS's floor), so its watch polls
	// once a second: its propagation is bounded by that, by design.
	dns := dnstest.NewServer(b)
	publish := func(h *sal.Host) {
		ap := h.LocalAddr()
		dns.SetSRV(srvName("bench.demo"), time.Second, dnstest.SRV{Port: ap.Port(), Target: "h.bench.demo"})
		dns.SetAddrs("h.bench.demo", time.Second, ap.Addr())
	}
	openDNS := func(cfg resolve.DNSConfig) *resolve.DNS {
		cfg.Servers = []string{dns.Addr()}
		d, err := resolve.NewDNS(cfg)
		require.NoError(b, err)
		b.Cleanup(func() { d.Close() })
		return d
	}
	return []saltest.BenchBackend{
		{Name: "registry", Open: openRegistry, Uncached: openRegistry},
		{
			Name: "dns",
			Open: func(*testing.B) resolve.Resolver { return openDNS(resolve.DNSConfig{}) },
			// A DNS keeps answers for their TTL; uncached, every call finds
			// its answer expired and asks the server.
			Uncached: func(*testing.B) resolve.Resolver {
				clock := newFakeClock()
				return expiring{openDNS(resolve.DNSConfig{Now: clock.Now}), clock}
			},
			Published: publish,
		},
	}
}

// expiring moves a DNS's clock past every answer's TTL before each lookup.
type expiring struct {
	d     *resolve.DNS
	clock *fakeClock
}

func (e expiring) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	e.clock.Advance(time.Hour)
	return e.d.Resolve(ctx, service)
}
