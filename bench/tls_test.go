package main

import (
	"crypto/tls"
	"testing"

	"github.com/stretchr/testify/require"
)

// benchTLS is newTLSConfigs for benchmarks.
func benchTLS(tb testing.TB, mutual bool) (server, client *tls.Config) {
	server, client, err := newTLSConfigs(mutual)
	require.NoError(tb, err)
	return server, client
}
