package registry

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

// Register-and-withdraw churn under fresh names leaves nothing behind: a
// name is held for its key BindingTTL after its last lease (at most
// MaxHeldNames of them, the oldest lapsing first), and a self-certifying
// ID, bound by its name, not at all. The map of bound names was pruned
// only when the same name registered again, so churn grew it for good.
func TestRegistryNamesLapse(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const ttl = 500 * time.Millisecond
	r, err := Listen("127.0.0.1:0", Config{BindingTTL: ttl, MaxHeldNames: 20})
	require.NoError(t, err)
	defer r.Close()
	c, err := NewClient(r.Addr().String(), ClientConfig{Key: r.Key()})
	require.NoError(t, err)
	defer c.Close()
	names := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.owners)
	}
	ep := resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}
	for i := range 50 {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		fp, err := resolve.FingerprintOf(key.Public())
		require.NoError(t, err)
		for _, name := range []string{fmt.Sprintf("churn%d.demo", i), "rk--" + fp.String() + ".churn"} {
			reg, err := c.RegisterSigned(ctx, name, ep, key)
			require.NoError(t, err)
			require.NoError(t, reg.Close())
		}
	}
	require.Equal(t, 20, names(), "the 20 plain names released last are held; no self-certifying one")
	require.Equal(t, 20, r.Stats().HeldNames)
	require.Equal(t, uint64(30), r.Stats().Limits.NamesReleasedEarly)

	// A held name is still its key's: another is refused.
	_, other, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	_, err = c.RegisterSigned(ctx, "churn49.demo", ep, other)
	require.ErrorIs(t, err, resolve.ErrNotOwner)

	require.Eventually(t, func() bool { return names() == 0 }, 10*ttl, 10*time.Millisecond, "held names lapse after BindingTTL")
	_, err = c.RegisterSigned(ctx, "churn49.demo", ep, other)
	require.NoError(t, err, "a lapsed name is free")
}
