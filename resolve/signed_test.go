package resolve_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// Proofs verify for every key type a Host may hold, and for nothing else:
// another binding, service, address, key or a flipped bit is refused.
func TestProofs(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	keys := map[string]crypto.Signer{"ed25519": resolvetest.NewKey(t), "ecdsa": ecKey, "rsa": rsaKey}
	for name, key := range keys {
		t.Run(name, func(t *testing.T) {
			ep := resolve.Endpoint{Addr: addr("192.0.2.1:443"), Key: resolvetest.Fingerprint(t, key)}
			binding := []byte("channel")
			p, err := resolve.Sign(key, "test v1", binding, "Svc.Demo", ep)
			require.NoError(t, err)
			require.NoError(t, p.Verify("test v1", binding, "svc.demo", ep), "service names are case-folded")

			other := ep
			other.Addr = addr("192.0.2.2:443")
			require.ErrorIs(t, p.Verify("test v1", binding, "svc.demo", other), resolve.ErrUnsigned)
			require.ErrorIs(t, p.Verify("test v1", []byte("replayed"), "svc.demo", ep), resolve.ErrUnsigned)
			require.ErrorIs(t, p.Verify("test v2", binding, "svc.demo", ep), resolve.ErrUnsigned)
			require.ErrorIs(t, p.Verify("test v1", binding, "other.demo", ep), resolve.ErrUnsigned)
			rogue := ep
			rogue.Key = resolvetest.Fingerprint(t, resolvetest.NewKey(t))
			require.ErrorIs(t, p.Verify("test v1", binding, "svc.demo", rogue), resolve.ErrUnsigned)

			flipped := resolve.Proof{PublicKey: p.PublicKey, Signature: append([]byte(nil), p.Signature...)}
			flipped.Signature[len(flipped.Signature)/2] ^= 1
			require.ErrorIs(t, flipped.Verify("test v1", binding, "svc.demo", ep), resolve.ErrUnsigned)
			require.ErrorIs(t, resolve.Proof{}.Verify("test v1", binding, "svc.demo", ep), resolve.ErrUnsigned)
		})
	}
	// Signing for an endpoint that pins another key is a caller's mistake.
	_, err = resolve.Sign(resolvetest.NewKey(t), "test v1", nil, "svc.demo", resolve.Endpoint{Addr: addr("192.0.2.1:443"), Key: resolvetest.Fingerprint(t, rsaKey)})
	require.ErrorIs(t, err, resolve.ErrInvalid)
}

func TestCheckOwner(t *testing.T) {
	a, b := resolvetest.Fingerprint(t, resolvetest.NewKey(t)), resolvetest.Fingerprint(t, resolvetest.NewKey(t))
	selfCert := "rk--" + a.String() + ".bank.demo"
	require.NoError(t, resolve.CheckOwner("bank.demo", a, resolve.Fingerprint{}), "the first registrant binds a name")
	require.NoError(t, resolve.CheckOwner("bank.demo", a, a))
	require.ErrorIs(t, resolve.CheckOwner("bank.demo", b, a), resolve.ErrNotOwner)
	require.NoError(t, resolve.CheckOwner(selfCert, a, resolve.Fingerprint{}))
	require.ErrorIs(t, resolve.CheckOwner(selfCert, b, resolve.Fingerprint{}), resolve.ErrNotOwner, "an ID's own key beats first come")
	require.ErrorIs(t, resolve.CheckOwner("rk--tooshort.demo", a, resolve.Fingerprint{}), resolve.ErrInvalid)
}
