package registry

import (
	"errors"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/regwire"
)

// A limit travels as text that a client reads back into a LimitError, and
// that a client which predates LimitError shows as it is.
func TestLimitOnTheWire(t *testing.T) {
	le := &resolve.LimitError{Limit: resolve.LimitLeasesPerKey, Max: 256}
	require.Equal(t, "limit 256 leases per key", limitReason(le))
	back, ok := parseLimitReason(limitReason(le))
	require.True(t, ok)
	require.Equal(t, le, back)
	for _, bad := range []string{"", "limit", "limit x leases", "limit 3", "too many"} {
		_, ok := parseLimitReason(bad)
		require.False(t, ok, bad)
	}

	// An answer.
	err := parseCode(&regwire.Frame{Type: regwire.TypeError, Code: regwire.CodeLimit, Message: limitReason(le)})
	require.ErrorIs(t, err, resolve.ErrLimit)
	require.Equal(t, le, err)
	require.Equal(t, "resolve: over the registry's limit: leases per key (at most 256)", err.Error())
	// From a registry that predates LimitError.
	err = parseCode(&regwire.Frame{Type: regwire.TypeError, Code: regwire.CodeLimit, Message: "resolve: registry limit reached: too many registrations"})
	require.ErrorIs(t, err, resolve.ErrLimit)

	// A connection closed over a limit, and a handshake refused.
	closed := &quic.ApplicationError{Remote: true, ErrorCode: codeRegistryLimit, ErrorMessage: "limit 32 connections per address"}
	err = limitFromClose(closed)
	require.ErrorAs(t, err, &le)
	require.Equal(t, resolve.LimitConnsPerAddr, le.Limit)
	require.ErrorIs(t, err, closed)
	err = limitFromClose(&quic.TransportError{Remote: true, ErrorCode: quic.ConnectionRefused})
	require.ErrorAs(t, err, &le)
	require.Equal(t, resolve.LimitHandshakes, le.Limit)
	other := errors.New("other")
	require.Same(t, other, limitFromClose(other))
}
