package resolve_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/dns"
	"github.com/roamnet/roam/resolve/internal/dnstest"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/resolve/resolvetest"
	"github.com/roamnet/roam/sal"
	"github.com/roamnet/roam/sal/saltest"
)

// BenchmarkBackends compares the backends of this module, the registry and
// DNS (packages registry and dns), in one run; the etcd module's
// BenchmarkBackends measures etcd the same way.
func BenchmarkBackends(b *testing.B) {
	saltest.BenchBackends(b, benchBackends(b))
}

func benchBackends(b *testing.B) []saltest.BenchBackend {
	reg, err := registry.Listen("127.0.0.1:0", registry.Config{})
	require.NoError(b, err)
	b.Cleanup(func() { reg.Close() })
	openRegistry := func(b *testing.B) resolve.Resolver {
		r, err := resolve.Open(context.Background(), reg.URL())
		require.NoError(b, err)
		b.Cleanup(func() { r.(*registry.Client).Close() })
		return r
	}

	// DNS answers carry a 1 s TTL (dns.New's floor), so its watch polls
	// once a second: its propagation is bounded by that, by design.
	zone := dnstest.NewServer(b)
	publish := func(h *sal.Host) {
		ap := h.LocalAddr()
		zone.SetSRV("_roam._udp.bench.demo.", time.Second, dnstest.SRV{Port: ap.Port(), Target: "h.bench.demo"})
		zone.SetAddrs("h.bench.demo", time.Second, ap.Addr())
	}
	openDNS := func(cfg dns.Config) *dns.Resolver {
		cfg.Servers = []string{zone.Addr()}
		d, err := dns.New(cfg)
		require.NoError(b, err)
		b.Cleanup(func() { d.Close() })
		return d
	}
	return []saltest.BenchBackend{
		{Name: "registry", Open: openRegistry, Uncached: openRegistry},
		{
			Name: "dns",
			Open: func(*testing.B) resolve.Resolver { return openDNS(dns.Config{}) },
			// A DNS keeps answers for their TTL; uncached, every call finds
			// its answer expired and asks the server.
			Uncached: func(*testing.B) resolve.Resolver {
				clock := resolvetest.NewClock()
				return expiring{openDNS(dns.Config{Now: clock.Now}), clock}
			},
			Published: publish,
		},
	}
}

// expiring moves a DNS's clock past every answer's TTL before each lookup.
type expiring struct {
	d     *dns.Resolver
	clock *resolvetest.Clock
}

func (e expiring) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	e.clock.Advance(time.Hour)
	return e.d.Resolve(ctx, service)
}
