package resolve_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// zeroFP is the text of the all-zero fingerprint, which no key has.
var zeroFP = strings.Repeat("a", resolve.FingerprintLen)

// A pin that is given is always a pin: the all-zero fingerprint, which
// would read as "no key", does not parse, in either case.
func TestParseFingerprintRefusesZero(t *testing.T) {
	for _, s := range []string{zeroFP, strings.ToUpper(zeroFP)} {
		fp, err := resolve.ParseFingerprint(s)
		require.ErrorIs(t, err, resolve.ErrZeroFingerprint, s)
		require.ErrorIs(t, err, resolve.ErrInvalidFingerprint, s)
		require.True(t, fp.IsZero())
	}
	// The smallest key that is not zero still parses.
	one := resolve.Fingerprint{31: 1}
	fp, err := resolve.ParseFingerprint(one.String())
	require.NoError(t, err)
	require.Equal(t, one, fp)
	for _, bad := range []string{"", zeroFP[1:], zeroFP + "a", "1" + zeroFP[1:], zeroFP[:51] + "b"} {
		_, err := resolve.ParseFingerprint(bad)
		require.ErrorIs(t, err, resolve.ErrInvalidFingerprint, bad)
		require.NotErrorIs(t, err, resolve.ErrZeroFingerprint, bad)
	}
}

// The zero Fingerprint marshals to empty text, which unmarshals back to
// zero; the all-zero text is refused, so text never yields a zero pin by
// accident.
func TestFingerprintTextZero(t *testing.T) {
	type rec struct {
		Key resolve.Fingerprint `json:"key"`
	}
	b, err := json.Marshal(rec{})
	require.NoError(t, err)
	require.JSONEq(t, `{"key":""}`, string(b))
	var got rec
	require.NoError(t, json.Unmarshal(b, &got))
	require.True(t, got.Key.IsZero())

	fp := resolve.Fingerprint{1, 2, 3}
	b, err = json.Marshal(rec{Key: fp})
	require.NoError(t, err)
	require.JSONEq(t, `{"key":"`+fp.String()+`"}`, string(b))
	require.NoError(t, json.Unmarshal(b, &got))
	require.Equal(t, fp, got.Key)

	err = json.Unmarshal([]byte(`{"key":"`+zeroFP+`"}`), &got)
	require.ErrorIs(t, err, resolve.ErrZeroFingerprint)
	var f resolve.Fingerprint
	require.ErrorIs(t, f.UnmarshalText([]byte(zeroFP)), resolve.ErrZeroFingerprint)
}

// A self-certifying ID whose key label is the zero fingerprint pins
// nothing, so it is no self-certifying ID: IDKey and CheckOwner refuse it
// as invalid (it used to be bound to the zero key).
func TestZeroKeyLabelIsInvalid(t *testing.T) {
	zeroID := "rk--" + zeroFP + ".bank.demo"
	_, pinned, err := resolve.IDKey(zeroID)
	require.ErrorIs(t, err, resolve.ErrInvalid)
	require.ErrorIs(t, err, resolve.ErrZeroFingerprint)
	require.False(t, pinned)
	key := resolvetest.NewKey(t)
	require.ErrorIs(t, resolve.CheckOwner(zeroID, resolvetest.Fingerprint(t, key), resolve.Fingerprint{}), resolve.ErrInvalid)
	// A registry refuses it too: TestRegistryRefusesZeroKeyLabel in
	// package registry.
}
