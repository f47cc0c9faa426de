package registry

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/roamnet/roam/resolve"
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

// selfSigned is the registry's certificate: SelfSigned, named for it.
func selfSigned(key crypto.Signer) (tls.Certificate, resolve.Fingerprint, error) {
	return resolve.SelfSigned(key, "roam registry ")
}

// registryClientTLS trusts exactly the pinned key, or any key when pin is
// zero: a registry reached without a pin is encrypted but unauthenticated,
// which the documentation of ClientConfig.Key spells out. Only the Go API
// can ask for that: no text parses to the zero pin (resolve.ParseFingerprint
// and resolve.Open refuse it), so a pin that is written down is always
// checked.
func registryClientTLS(pin resolve.Fingerprint) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{registryALPN},
		ServerName:         "roam-registry",
		InsecureSkipVerify: true, // the key is checked below, names never are
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return fmt.Errorf("%w: no certificate", ErrKeyMismatch)
			}
			cert, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return fmt.Errorf("%w: %w", ErrKeyMismatch, err)
			}
			if !pin.IsZero() && sha256.Sum256(cert.RawSubjectPublicKeyInfo) != pin {
				return fmt.Errorf("%w: want %s", ErrKeyMismatch, pin)
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
