package resolve_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

func ep(s string) resolve.Endpoint {
	return resolve.Endpoint{Addr: netip.MustParseAddrPort(s)}
}

func withKey(e resolve.Endpoint, b byte) resolve.Endpoint {
	e.Key = resolve.Fingerprint{b}
	return e
}

func newMemory(t *testing.T) *resolve.Memory {
	m := resolve.NewMemory()
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func mustRegister(t *testing.T, r resolve.Registrar, service string, e resolve.Endpoint) resolve.Registration {
	t.Helper()
	reg, err := r.Register(context.Background(), service, e)
	require.NoError(t, err)
	return reg
}

func TestMemoryRegisterValidation(t *testing.T) {
	tests := []struct {
		name    string
		service string
		ep      resolve.Endpoint
		wantErr bool
	}{
		{"ok", "web", ep("10.0.0.1:443"), false},
		{"unspecified IP means this machine", "web", ep("0.0.0.0:443"), false},
		{"IPv6", "web", ep("[::1]:443"), false},
		{"empty service", "", ep("10.0.0.1:443"), true},
		{"zero address", "web", resolve.Endpoint{}, true},
		{"port 0", "web", ep("10.0.0.1:0"), true},
		{"negative TTL", "web", resolve.Endpoint{Addr: netip.MustParseAddrPort("10.0.0.1:443"), TTL: -time.Second}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := newMemory(t).Register(context.Background(), tt.service, tt.ep)
			if !tt.wantErr {
				require.NoError(t, err)
				require.NoError(t, reg.Close())
				return
			}
			require.ErrorIs(t, err, resolve.ErrInvalid)
			var e *resolve.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, "register", e.Op)
		})
	}
}

func TestMemorySameAddressReplaces(t *testing.T) {
	a, b := ep("10.0.0.1:443"), ep("10.0.0.2:443")
	tests := []struct {
		name       string
		closeFirst string // "old" or "new"
		afterFirst []resolve.Endpoint
	}{
		// The older registration is superseded: closing it changes nothing.
		{"close old first", "old", []resolve.Endpoint{withKey(a, 2), b}},
		// The newer one owns the address: closing it withdraws the address.
		{"close new first", "new", []resolve.Endpoint{b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			m := newMemory(t)
			old := mustRegister(t, m, "web", withKey(a, 1))
			other := mustRegister(t, m, "web", b)
			defer other.Close()
			nu := mustRegister(t, m, "web", withKey(a, 2))

			got, err := m.Resolve(ctx, "web")
			require.NoError(t, err)
			require.Equal(t, []resolve.Endpoint{withKey(a, 2), b}, got, "replaced in place")

			first, second := old, nu
			if tt.closeFirst == "new" {
				first, second = nu, old
			}
			require.NoError(t, first.Close())
			got, err = m.Resolve(ctx, "web")
			require.NoError(t, err)
			require.Equal(t, tt.afterFirst, got)

			require.NoError(t, second.Close())
			got, err = m.Resolve(ctx, "web")
			require.NoError(t, err)
			require.Equal(t, []resolve.Endpoint{b}, got)
		})
	}
}

func TestMemoryResolveSnapshotIsStable(t *testing.T) {
	m := newMemory(t)
	defer mustRegister(t, m, "web", ep("10.0.0.1:443")).Close()
	got, err := m.Resolve(context.Background(), "web")
	require.NoError(t, err)
	defer mustRegister(t, m, "web", ep("10.0.0.2:443")).Close()
	require.Equal(t, []resolve.Endpoint{ep("10.0.0.1:443")}, got, "a later change must not show through an old answer")
}

// A watcher that never reads must not block registrars, and must then see
// only the newest set.
func TestMemorySlowWatcherCoalesces(t *testing.T) {
	m := newMemory(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := m.Watch(ctx, "web")
	require.NoError(t, err)

	var regs []resolve.Registration
	for i := range 100 {
		regs = append(regs, mustRegister(t, m, "web", resolve.Endpoint{
			Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 443),
		}))
	}
	require.Len(t, <-ch, 100)
	select {
	case eps := <-ch:
		t.Fatalf("a stale set was kept: %d endpoints", len(eps))
	default:
	}
	for _, r := range regs {
		require.NoError(t, r.Close())
	}
	require.Empty(t, <-ch)
}

func TestMemoryContextCause(t *testing.T) {
	m := newMemory(t)
	cause := errors.New("host shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)

	_, err := m.Resolve(ctx, "web")
	require.ErrorIs(t, err, cause)
	_, err = m.Register(ctx, "web", ep("10.0.0.1:443"))
	require.ErrorIs(t, err, cause)
	_, err = m.Watch(ctx, "web")
	require.ErrorIs(t, err, cause)
}

func TestMemoryClose(t *testing.T) {
	ctx := context.Background()
	m := resolve.NewMemory()
	reg := mustRegister(t, m, "web", ep("10.0.0.1:443"))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := m.Watch(wctx, "web")
	require.NoError(t, err)

	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "Close is idempotent")
	for range ch { // drain to the close
	}
	require.NoError(t, reg.Close(), "closing a registration after the registry is harmless")

	_, err = m.Resolve(ctx, "web")
	require.ErrorIs(t, err, resolve.ErrClosed)
	_, err = m.Register(ctx, "web", ep("10.0.0.1:443"))
	require.ErrorIs(t, err, resolve.ErrClosed)
	_, err = m.Watch(ctx, "web")
	require.ErrorIs(t, err, resolve.ErrClosed)
}
