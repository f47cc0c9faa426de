package etcd_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/etcd"
	"github.com/roamnet/roam/resolve/etcd/internal/etcdtest"
	"github.com/roamnet/roam/sal/saltest"
)

// BenchmarkBackends measures etcd as resolve's BenchmarkBackends measures
// the registry and DNS, under the same sal Hosts. It needs an etcd binary
// (CI installs Debian's); elsewhere it skips.
func BenchmarkBackends(b *testing.B) {
	if !etcdtest.Installed() {
		b.Skip("etcd not installed")
	}
	endpoints := etcdtest.Endpoints(b)
	prefix := etcdtest.Prefix(b)
	open := func(b *testing.B) resolve.Resolver {
		return newEtcd(b, endpoints, etcd.Config{Prefix: prefix})
	}
	// A Backend keeps nothing: every Resolve asks the cluster.
	saltest.BenchBackends(b, []saltest.BenchBackend{{Name: "etcd", Open: open, Uncached: open}})
}

// BenchmarkEtcdStaleReads is what BenchmarkBackends leaves out: an
// uncached Resolve as a serializable read, which a member answers from its
// own state, beside the linearizable read the backend does by default.
func BenchmarkEtcdStaleReads(b *testing.B) {
	endpoints := etcdtest.Endpoints(b)
	prefix := etcdtest.Prefix(b)
	e := newEtcd(b, endpoints, etcd.Config{Prefix: prefix})
	stale := newEtcd(b, endpoints, etcd.Config{Prefix: prefix, StaleReads: true})
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
