package registry_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// The registry logs a client that sends garbage as a malformed request,
// and clients that ask, register, watch and leave, closing or crashing,
// not at all: they once each left a "malformed request" line behind.
func TestRegistryLogsOnlyMalformedRequests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var log resolvetest.LogBuffer
	r := startRegistry(t, registry.Config{
		Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	owner := registryClient(t, r, resolvetest.NewKey(t))
	_, err := owner.Register(ctx, "owned.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4000")})
	require.NoError(t, err)
	require.NoError(t, owner.Close())

	for i, crash := range []bool{false, true} {
		c, err := registry.NewClient(r.Addr().String(), registry.ClientConfig{Key: r.Key(), Signer: resolvetest.NewKey(t)})
		require.NoError(t, err)
		_, err = c.Resolve(ctx, "nobody.demo")
		require.ErrorIs(t, err, resolve.ErrNotFound)
		_, err = c.Register(ctx, "owned.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4001")})
		require.ErrorIs(t, err, resolve.ErrNotOwner) // logged at debug level
		service := fmt.Sprintf("here%d.demo", i)
		_, err = c.Register(ctx, service, resolve.Endpoint{Addr: addr("127.0.0.1:4002")})
		require.NoError(t, err)
		wctx, wcancel := context.WithCancel(ctx)
		ch, err := c.Watch(wctx, service)
		require.NoError(t, err)
		<-ch
		if crash {
			registry.CrashClient(c)
		} else {
			require.NoError(t, c.Close())
		}
		wcancel()
		require.Eventually(t, func() bool { return r.Stats().Conns == 0 }, 5*time.Second, 5*time.Millisecond,
			"the registry sees the client leave")
	}
	require.Equal(t, 2, log.Count("registration refused"), "the log is captured at debug level")
	require.False(t, log.Has("malformed"), "a client that leaves is not malformed")

	require.NoError(t, registry.SendGarbage(ctx, r.Addr().(*net.UDPAddr), r.Key(), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}))
	require.Eventually(t, func() bool { return log.Has("malformed request") }, 5*time.Second, 5*time.Millisecond,
		"garbage still is")
}
