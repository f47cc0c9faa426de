package resolve

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// SelfSigned wraps key (an Ed25519 key it makes when nil) in a
// self-signed certificate, the carrier of a key in roam's TLS handshakes,
// the Host's and the registry's alike: peers never check its chain, names
// or dates, only the key inside it, whose fingerprint they pin, and TLS
// 1.3's CertificateVerify proves the peer holds it. The common name is
// namePrefix followed by the fingerprint, for people reading a capture.
// The certificate serves both sides of a handshake and lasts a century,
// so that its dates can never end a flow. The Leaf is filled in.
func SelfSigned(key crypto.Signer, namePrefix string) (tls.Certificate, Fingerprint, error) {
	if key == nil {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return tls.Certificate{}, Fingerprint{}, err
		}
		key = priv
	}
	fp, err := FingerprintOf(key.Public())
	if err != nil {
		return tls.Certificate{}, Fingerprint{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, Fingerprint{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: namePrefix + fp.String()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, Fingerprint{}, fmt.Errorf("resolve: self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, Fingerprint{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, fp, nil
}
