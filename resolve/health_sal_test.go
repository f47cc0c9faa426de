package resolve_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
	"github.com/stretchr/testify/require"
)

// A provider that crashes without withdrawing its registration drops out of
// a Health's answers within 5 s, over real sockets with sal's ping, while a
// healthy provider of the same service stays in.
func TestHealthDropsCrashedSALProvider(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mem := resolve.NewMemory()
	newHost := func() *sal.Host {
		h, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
		require.NoError(t, err)
		t.Cleanup(func() { h.Close() })
		return h
	}
	crashing, healthy, prober := newHost(), newHost(), newHost()
	for _, h := range []*sal.Host{crashing, healthy} {
		_, err := h.Listen(ctx, "crash.demo")
		require.NoError(t, err)
	}
	// A registration of the crashing Host's address that its own Close
	// will not withdraw, as a lease outlives a crashed provider.
	stale, err := mem.Register(ctx, "crash.demo", resolve.Endpoint{Addr: crashing.LocalAddr(), Key: crashing.Key()})
	require.NoError(t, err)
	defer stale.Close()

	// Short probes: the crashed provider is out within Interval*Failures +
	// Timeout, about 1 s here (4 s with the defaults), which leaves most of
	// the 5 s bound to a loaded machine's delays.
	h := resolve.NewHealth(mem, prober, resolve.HealthConfig{Interval: 200 * time.Millisecond, Timeout: 300 * time.Millisecond})
	defer h.Close()
	ch, err := h.Watch(ctx, "crash.demo")
	require.NoError(t, err)
	require.Len(t, <-ch, 2)
	// Wait for a successful probe of each (a first one, which dials, may
	// outlast the short Timeout on a busy machine).
	require.Eventually(t, func() bool {
		st := h.Status("crash.demo")
		return len(st) == 2 && st[0].RTT > 0 && st[1].RTT > 0
	}, 5*time.Second, 10*time.Millisecond, "both providers probed")
	for _, st := range h.Status("crash.demo") {
		require.True(t, st.Up, "%v: %v", st.Endpoint, st.Err)
		require.Positive(t, st.RTT)
	}

	require.NoError(t, crashing.Close())
	start := time.Now()
	var eps []resolve.Endpoint
	for len(eps) != 1 {
		select {
		case eps = <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("crashed provider still listed after %v: %v", time.Since(start), h.Status("crash.demo"))
		}
	}
	t.Logf("crashed provider dropped after %v", time.Since(start))
	require.LessOrEqual(t, time.Since(start), 5*time.Second)
	require.Equal(t, healthy.LocalAddr(), eps[0].Addr)
	eps, err = h.Resolve(ctx, "crash.demo")
	require.NoError(t, err)
	require.Len(t, eps, 1)
	require.Equal(t, healthy.LocalAddr(), eps[0].Addr)
	raw, err := mem.Resolve(ctx, "crash.demo")
	require.NoError(t, err)
	require.Len(t, raw, 2, "the registration itself is still there")
}

// A Health in front of a registry keeps endpoints that stopped answering
// out of its answers; a sal.Host probes them with SAL pings.
func ExampleNewHealth() {
	ctx := context.Background()
	mem := resolve.NewMemory()
	provider, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer provider.Close()
	provider.Listen(ctx, "echo.demo")

	prober, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer prober.Close()
	health := resolve.NewHealth(mem, prober, resolve.HealthConfig{})
	defer health.Close()

	// Dialers that resolve through health (sal.Config{Resolver: health})
	// never get an endpoint that failed three probes in a row.
	eps, _ := health.Resolve(ctx, "echo.demo")
	fmt.Println(len(eps), "endpoint")
	// Output: 1 endpoint
}
