package resolve

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"strings"
)

// SignedRegistrar is implemented by backends that accept a registration
// only from the holder of the service's key, so that nobody can hijack a
// service by registering a rogue endpoint for it.
//
// key must be the private half of ep.Key (ep.Key may be left zero, and is
// then filled in from key). The backend binds the service to that key: a
// service ID that carries a key ("rk--<fp>.name") is bound to it from the
// start, and any other name is bound to the key of its first registration.
// A registration under another key fails with an error wrapping ErrNotOwner.
//
// A sal.Host registers through RegisterSigned, with its own key, whenever
// its resolver offers it.
type SignedRegistrar interface {
	RegisterSigned(ctx context.Context, service string, ep Endpoint, key crypto.Signer) (Registration, error)
}

// keyLabelPrefix leads the key label of a self-certifying service ID,
// "rk--<fingerprint>" (see sal.ServiceID).
const keyLabelPrefix = "rk--"

// IDKey returns the key that a self-certifying service ID pins, from its
// leftmost label "rk--<fp>"; ok is false when the ID pins no key (or its
// key label is malformed, which backends then refuse as ErrInvalid).
func IDKey(service string) (fp Fingerprint, ok bool, err error) {
	label, _, _ := strings.Cut(service, ".")
	if len(label) < len(keyLabelPrefix) || !strings.EqualFold(label[:len(keyLabelPrefix)], keyLabelPrefix) {
		return Fingerprint{}, false, nil
	}
	fp, err = ParseFingerprint(label[len(keyLabelPrefix):])
	if err != nil {
		return Fingerprint{}, false, fmt.Errorf("%w: key label: %w", ErrInvalid, err)
	}
	return fp, true, nil
}

// A Proof shows that the holder of a key registered an endpoint for a
// service: a signature, by that key, over the service, the endpoint and a
// binding (bytes that tie the proof to one channel or one backend, so it
// cannot be replayed elsewhere).
type Proof struct {
	// PublicKey is the signer's DER SubjectPublicKeyInfo; its fingerprint
	// must equal the endpoint's Key.
	PublicKey []byte
	// Signature is over ProofMessage(domain, binding, service, ep).
	Signature []byte
}

// Limits that keep a hostile proof cheap to refuse.
const (
	maxProofKey = 1 << 11 // an RSA-8192 SPKI is about 1.1 KB
	maxProofSig = 1 << 10
)

// ProofMessage returns the bytes a Proof signs. domain names the protocol
// ("roam registry v1"), binding ties the proof to its channel, and the
// endpoint's TTL is not covered: a backend sets its own lease.
func ProofMessage(domain string, binding []byte, service string, ep Endpoint) []byte {
	var b []byte
	b = appendField(b, []byte(domain))
	b = appendField(b, binding)
	b = appendField(b, []byte(strings.ToLower(service)))
	addr, _ := ep.Addr.MarshalBinary()
	b = appendField(b, addr)
	b = append(b, ep.Key[:]...)
	return b
}

func appendField(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

// Sign makes a Proof for ep with key. ep.Key must be key's fingerprint.
func Sign(key crypto.Signer, domain string, binding []byte, service string, ep Endpoint) (Proof, error) {
	fp, err := FingerprintOf(key.Public())
	if err != nil {
		return Proof{}, err
	}
	if ep.Key != fp {
		return Proof{}, fmt.Errorf("%w: endpoint pins %s, the signing key is %s", ErrInvalid, ep.Key, fp)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return Proof{}, fmt.Errorf("resolve: sign: %w", err)
	}
	digest := sha256.Sum256(ProofMessage(domain, binding, service, ep))
	var sig []byte
	switch key.Public().(type) {
	case ed25519.PublicKey:
		sig, err = key.Sign(rand.Reader, digest[:], crypto.Hash(0))
	default:
		sig, err = key.Sign(rand.Reader, digest[:], crypto.SHA256)
	}
	if err != nil {
		return Proof{}, fmt.Errorf("resolve: sign: %w", err)
	}
	return Proof{PublicKey: der, Signature: sig}, nil
}

// Verify checks that p proves possession of ep.Key for this registration.
// Every failure wraps ErrUnsigned.
func (p Proof) Verify(domain string, binding []byte, service string, ep Endpoint) error {
	if len(p.PublicKey) == 0 || len(p.PublicKey) > maxProofKey || len(p.Signature) == 0 || len(p.Signature) > maxProofSig {
		return fmt.Errorf("%w: missing or oversized proof", ErrUnsigned)
	}
	if sha256.Sum256(p.PublicKey) != ep.Key {
		return fmt.Errorf("%w: proof key does not match the endpoint's key", ErrUnsigned)
	}
	pub, err := x509.ParsePKIXPublicKey(p.PublicKey)
	if err != nil {
		return fmt.Errorf("%w: proof key: %w", ErrUnsigned, err)
	}
	digest := sha256.Sum256(ProofMessage(domain, binding, service, ep))
	ok := false
	switch pub := pub.(type) {
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, digest[:], p.Signature)
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, digest[:], p.Signature)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], p.Signature) == nil ||
			rsa.VerifyPSS(pub, crypto.SHA256, digest[:], p.Signature, nil) == nil
	}
	if !ok {
		return fmt.Errorf("%w: bad signature", ErrUnsigned)
	}
	return nil
}

// CheckOwner returns nil when key may register service, given the key the
// service is already bound to (zero when none): a self-certifying ID's own
// key always decides; otherwise the existing binding does. It wraps
// ErrNotOwner or ErrInvalid.
func CheckOwner(service string, key, bound Fingerprint) error {
	idKey, pinned, err := IDKey(service)
	if err != nil {
		return err
	}
	switch {
	case pinned && key != idKey:
		return fmt.Errorf("%w: the ID pins %s", ErrNotOwner, idKey)
	case !pinned && !bound.IsZero() && key != bound:
		return fmt.Errorf("%w: %s", ErrNotOwner, bound)
	}
	return nil
}
