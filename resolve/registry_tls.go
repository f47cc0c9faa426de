package resolve

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// registryALPN names the registry protocol in the TLS handshake, so that
// neither a sal Host nor anything else mistakes a registry for its peer.
const registryALPN = "roam-registry/1"

// proofDomain separates registry proofs from any other signature the same
// key makes (sal's TLS handshakes, etcd records).
const proofDomain = "roam registry v1"

// exporterLabel derives the per-connection binding that registry proofs
// sign, so that a proof captured on one connection is worthless on another.
const exporterLabel = "EXPORTER-roam-registry-proof"

// selfSigned wraps key (generating an Ed25519 key when nil) in a
// certificate. Clients check only the key inside it, against the
// fingerprint they pin: names and chains mean nothing here.
func selfSigned(key crypto.Signer) (tls.Certificate, Fingerprint, error) {
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
		Subject:      pkix.Name{CommonName: "roam registry " + fp.String()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, Fingerprint{}, fmt.Errorf("resolve: registry certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, fp, nil
}

// ErrRegistryKey means the registry proved a key other than the pinned one.
var ErrRegistryKey = errors.New("resolve: registry key does not match the pin")

// registryClientTLS trusts exactly the pinned key, or any key when pin is
// zero: a registry reached without a pin is encrypted but unauthenticated,
// which the documentation of RegistryClientConfig.Key spells out. Only the
// Go API can ask for that: no text parses to the zero pin (ParseFingerprint
// and Open refuse it), so a pin that is written down is always checked.
func registryClientTLS(pin Fingerprint) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{registryALPN},
		ServerName:         "roam-registry",
		InsecureSkipVerify: true, // the key is checked below, names never are
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return fmt.Errorf("%w: no certificate", ErrRegistryKey)
			}
			cert, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return fmt.Errorf("%w: %w", ErrRegistryKey, err)
			}
			if !pin.IsZero() && sha256.Sum256(cert.RawSubjectPublicKeyInfo) != pin {
				return fmt.Errorf("%w: want %s", ErrRegistryKey, pin)
			}
			return nil
		},
	}
}

func registryServerTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{registryALPN},
		Certificates: []tls.Certificate{cert},
	}
}
