package sal

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/roamnet/roam/resolve"
)

// alpn names roam's protocol in the TLS handshake, so that a roam Host never
// mistakes another QUIC application for a peer, nor is mistaken for one.
const alpn = "roam/1"

// alpnNoListener is the only protocol a listening Host offers to a
// handshake whose SNI names a service it does not serve. Nothing matches
// it, so the handshake fails with TLS's no_application_protocol alert, which
// the dialer reads as ErrNoListener without spending a round trip on a flow.
const alpnNoListener = "roam/1-no-listener"

// identity is a Host's TLS identity. A service's key is the key of the Host
// that serves it: what a pin names is the SHA-256 of this public key.
type identity struct {
	cert tls.Certificate
	key  crypto.Signer // proves the Host's services to registries (resolve.SignedRegistrar)
	fp   resolve.Fingerprint
}

// newIdentity wraps key (generating an Ed25519 key when nil) in a
// self-signed certificate (resolve.SelfSigned). Peers never check the
// certificate's chain or names, only the key inside it: TLS 1.3's
// CertificateVerify proves the peer holds the private key, and the
// fingerprint is then compared with whatever the service ID or the
// resolver pins.
func newIdentity(key crypto.Signer) (*identity, error) {
	cert, fp, err := resolve.SelfSigned(key, keyLabelPrefix)
	if err != nil {
		return nil, err // "resolve: self-signed certificate: ..." says enough
	}
	return &identity{cert: cert, key: cert.PrivateKey.(crypto.Signer), fp: fp}, nil
}

// verifyAnyKey accepts any certificate whose key parses; identity is
// checked per flow against the pins (see Host.checkPeer), because one QUIC
// connection carries flows to several services with different pins.
func verifyAnyKey(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	if len(rawCerts) == 0 {
		return errors.New("sal: peer sent no certificate")
	}
	if _, err := x509.ParseCertificate(rawCerts[0]); err != nil {
		return fmt.Errorf("sal: peer certificate: %w", err)
	}
	return nil
}

func (id *identity) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{id.cert},
		NextProtos:            []string{alpn},
		ClientAuth:            tls.RequireAnyClientCert, // the dialer's key names it to the listener
		VerifyPeerCertificate: verifyAnyKey,
	}
}

// clientTLS returns the dialing side's config. serverName, the service
// the connection is dialed for, travels in the ClientHello's SNI, as a
// hostname does in HTTPS: it lets the listening Host refuse a service it
// does not serve during the handshake, and so lets the first flow on a
// connection skip its own round trip. Like an HTTPS hostname without ECH,
// it is visible on the wire.
func (id *identity) clientTLS(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		NextProtos:   []string{alpn},
		ServerName:   serverName,
		// Chains and names are meaningless for self-certifying keys; the
		// key itself is verified in VerifyPeerCertificate and per flow.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifyAnyKey,
	}
}

// peerFingerprint returns the fingerprint of the key the peer proved it holds.
func peerFingerprint(cs tls.ConnectionState) (resolve.Fingerprint, error) {
	if len(cs.PeerCertificates) == 0 {
		return resolve.Fingerprint{}, errors.New("sal: peer sent no certificate")
	}
	return resolve.FingerprintOf(cs.PeerCertificates[0].PublicKey)
}
