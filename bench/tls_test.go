package bench

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// benchTLS returns the TLS configs of the raw quic-go baseline: an Ed25519
// self-signed certificate like a roam Host's, so both pay the same crypto.
// mutual makes the client prove a key too, as a roam dialer does.
func benchTLS(tb testing.TB, mutual bool) (server, client *tls.Config) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(tb, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	require.NoError(tb, err)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"bench"}, MinVersion: tls.VersionTLS13}
	client = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"bench"}, MinVersion: tls.VersionTLS13}
	if mutual {
		server.ClientAuth = tls.RequireAnyClientCert
		client.Certificates = server.Certificates
	}
	return server, client
}
