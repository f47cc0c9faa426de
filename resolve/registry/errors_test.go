package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// A registry's error answer reaches its client's caller saying each thing
// once, as the registry's own error would: not "resolve resolve x: resolve:
// not found (registry: resolve resolve x: resolve: not found)".
func TestRegistryErrorText(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := startRegistry(t, registry.Config{})
	c := registryClient(t, r, resolvetest.NewKey(t))
	_, err := c.Resolve(ctx, "nope.demo")
	require.ErrorIs(t, err, resolve.ErrNotFound)
	var e *resolve.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "resolve nope.demo: not found", err.Error())

	reg, err := c.Register(ctx, "taken.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4000")})
	require.NoError(t, err)
	defer reg.Close()
	rogue := registryClient(t, r, resolvetest.NewKey(t))
	_, err = rogue.Register(ctx, "taken.demo", resolve.Endpoint{Addr: addr("127.0.0.1:4001")})
	require.ErrorIs(t, err, resolve.ErrNotOwner)
	require.Regexp(t, `^resolve register taken\.demo: service is bound to another key: [a-z2-7]{52} \(held by 1 live registration\(s\) under that key; serve it with that key, or pick another name\)$`, err.Error())
}
