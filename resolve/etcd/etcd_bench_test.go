package resolve_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/etcdtest"
)

// etcdBenchBackends adds etcd to BenchmarkBackends, where it runs beside
// the other backends under the same sal Hosts. Without an etcd binary
// (outside CI) the comparison goes on without it.
func etcdBenchBackends(b *testing.B) []benchBackend {
	if !etcdtest.Installed() {
		b.Log("etcd not installed: BenchmarkBackends leaves it out")
		return nil
	}
	endpoints := etcdtest.Endpoints(b)
	prefix := etcdtest.Prefix(b)
	open := func(b *testing.B) resolve.Resolver {
		return newEtcd(b, endpoints, resolve.EtcdConfig{Prefix: prefix})
	}
	// An Etcd keeps nothing: every Resolve asks the cluster.
	return []benchBackend{{name: "etcd", open: open, uncached: open}}
}

// BenchmarkEtcdStaleReads is what BenchmarkBackends leaves out: an
// uncached Resolve as a serializable read, which a member answers from its
// own state, beside the linearizable read the backend does by default.
func BenchmarkEtcdStaleReads(b *testing.B) {
	endpoints := etcdtest.Endpoints(b)
	prefix := etcdtest.Prefix(b)
	e := newEtcd(b, endpoints, resolve.EtcdConfig{Prefix: prefix})
	stale := newEtcd(b, endpoints, resolve.EtcdConfig{Prefix: prefix, StaleReads: true})
	key, _ := etcdSigner(b)
	ctx := context.Background()
	reg, err := e.RegisterSigned(ctx, "bench.demo", resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}, key)
	require.NoError(b, err)
	b.Cleanup(func() { reg.Close() })

	for _, x := range []struct {
		name string
		r    resolve.Resolver
	}{{"linearizable", e}, {"serializable", stale}} {
		b.Run(x.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := x.r.Resolve(ctx, "bench.demo"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
