package registry_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// zeroFP is the text of the all-zero fingerprint, which no key has.
var zeroFP = strings.Repeat("a", resolve.FingerprintLen)

// A registry URL with a key= that is empty, repeated, malformed or zero is
// refused by Open with a typed error, rather than connecting to whatever
// answers: the zero pin used to switch the check off.
func TestOpenRefusesBadPins(t *testing.T) {
	r := startRegistry(t, registry.Config{})
	base := "registry://" + r.Addr().String()
	good := r.Key().String()
	for _, tc := range []struct {
		query string
		want  error
	}{
		{"?key=" + zeroFP, resolve.ErrZeroFingerprint},
		{"?key=" + strings.ToUpper(zeroFP), resolve.ErrZeroFingerprint},
		{"?key=", resolve.ErrInvalidFingerprint},
		{"?key", resolve.ErrInvalidFingerprint},
		{"?key=" + good + "&key=" + good, resolve.ErrInvalidFingerprint},
		{"?key=" + zeroFP + "&key=" + good, resolve.ErrInvalidFingerprint},
		{"?key=" + good + "&key=" + zeroFP, resolve.ErrInvalidFingerprint},
		{"?key=" + good[:51], resolve.ErrInvalidFingerprint},
		{"?key=" + good[:51] + "1", resolve.ErrInvalidFingerprint},
		{"?key=" + good + ";x", resolve.ErrInvalid},
	} {
		res, err := resolve.Open(context.Background(), base+tc.query)
		if err == nil {
			// Only to say how it failed: the old code connected.
			_, rerr := res.Resolve(context.Background(), "echo.demo")
			res.(interface{ Close() error }).Close()
			t.Fatalf("%s: Open accepted it (and Resolve gave %v)", tc.query, rerr)
		}
		require.ErrorIs(t, err, resolve.ErrInvalid, tc.query)
		require.ErrorIs(t, err, tc.want, tc.query)
	}

	// The right pin, and no pin at all (a lab), still connect.
	for _, url := range []string{base + "?key=" + good, base + "?key=" + strings.ToUpper(good), base} {
		res, err := resolve.Open(context.Background(), url)
		require.NoError(t, err, url)
		_, err = res.Resolve(context.Background(), "echo.demo")
		require.ErrorIs(t, err, resolve.ErrNotFound, url)
		require.NoError(t, res.(interface{ Close() error }).Close())
	}
}

// A self-certifying ID whose key label is the zero fingerprint pins
// nothing, so it is no self-certifying ID: a registry refuses it as invalid
// (it used to be bound to the zero key), as IDKey and CheckOwner do.
func TestRegistryRefusesZeroKeyLabel(t *testing.T) {
	zeroID := "rk--" + zeroFP + ".bank.demo"
	r := startRegistry(t, registry.Config{})
	c := registryClient(t, r, nil)
	_, err := c.RegisterSigned(context.Background(), zeroID, resolve.Endpoint{Addr: addr("127.0.0.1:4000")}, resolvetest.NewKey(t))
	require.ErrorIs(t, err, resolve.ErrInvalid)
}
