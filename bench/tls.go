package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"time"
)

// newTLSConfigs returns the TLS configs of the raw quic-go baselines: an
// Ed25519 self-signed certificate like a roam Host's, so both pay the
// same crypto. mutual makes the client prove a key too, as a roam dialer
// does.
func newTLSConfigs(mutual bool) (server, client *tls.Config, err error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"bench"}, MinVersion: tls.VersionTLS13}
	client = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"bench"}, MinVersion: tls.VersionTLS13}
	if mutual {
		server.ClientAuth = tls.RequireAnyClientCert
		client.Certificates = server.Certificates
	}
	return server, client, nil
}
