package resolve_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

func newKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return k
}

func fingerprint(t testing.TB, k crypto.Signer) resolve.Fingerprint {
	fp, err := resolve.FingerprintOf(k.Public())
	require.NoError(t, err)
	return fp
}

func addr(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
