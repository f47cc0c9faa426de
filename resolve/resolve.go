package resolve

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Endpoint is one place where a service can be reached.
type Endpoint struct {
	// Addr is the UDP address of the Host that serves the service. An
	// unspecified IP (0.0.0.0 or ::) means "this machine", as with net.Dial.
	Addr netip.AddrPort
	// Key pins the public key the service must prove it holds. The zero
	// value pins nothing: the flow is then encrypted but not authenticated,
	// unless the service ID itself carries a key.
	Key Fingerprint
	// TTL is how long this answer may be cached. Zero means the cache's default.
	TTL time.Duration
}

func (e Endpoint) String() string {
	if e.Key.IsZero() {
		return e.Addr.String()
	}
	return e.Addr.String() + " key=" + e.Key.String()
}

// Resolver maps a service ID to the endpoints that serve it.
//
// Resolve returns ErrNotFound (possibly wrapped) when no endpoint is known.
// The returned slice may be shared: callers must not modify it.
type Resolver interface {
	Resolve(ctx context.Context, service string) ([]Endpoint, error)
}

// Invalidator is a resolver that keeps answers, as a Cache does, and can
// be told that the one it holds for service is stale: a sal.Host tells it
// when an endpoint it was handed stopped answering. A Host given a
// resolver that is an Invalidator uses it as it is; any other it puts
// behind a Cache of its own.
type Invalidator interface {
	Invalidate(service string)
}

// Registration is a live registration; Close withdraws it.
type Registration interface {
	Close() error
}

// Registrar is implemented by resolvers that accept registrations. The
// backend keeps a registration alive (renewing any lease it holds) until
// the Registration is closed.
type Registrar interface {
	Register(ctx context.Context, service string, ep Endpoint) (Registration, error)
}

// Watcher is implemented by resolvers that push changes.
//
// Watch sends the service's current endpoints at once and then again after
// every change, until ctx ends; then it closes the channel. An empty slice
// means no endpoint is known. A slow reader sees only the newest set:
// intermediate sets may be skipped, never reordered.
type Watcher interface {
	Watch(ctx context.Context, service string) (<-chan []Endpoint, error)
}

// Fingerprint identifies a public key: the SHA-256 of its DER-encoded
// SubjectPublicKeyInfo. The zero value means "no key"; it has no text form
// that parses (ParseFingerprint refuses it), so a pin written down is
// always a pin that is checked.
type Fingerprint [sha256.Size]byte

// FingerprintLen is the length of a Fingerprint's text form.
const FingerprintLen = 52

var fpEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// FingerprintOf returns the fingerprint of a public key.
func FingerprintOf(pub crypto.PublicKey) (Fingerprint, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Fingerprint{}, fmt.Errorf("resolve: fingerprint: %w", err)
	}
	return sha256.Sum256(der), nil
}

// IsZero reports whether f pins no key.
func (f Fingerprint) IsZero() bool { return f == Fingerprint{} }

// String returns the fingerprint as 52 lowercase base32 characters
// (a-z, 2-7), a form that is also a valid DNS label.
func (f Fingerprint) String() string {
	return strings.ToLower(fpEncoding.EncodeToString(f[:]))
}

// ParseFingerprint parses the form String returns (either case). The zero
// Fingerprint is refused with ErrZeroFingerprint: a pin that is given must
// be a key's, never "no pin".
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	if len(s) != FingerprintLen {
		return f, fmt.Errorf("%w: %d characters, want %d", ErrInvalidFingerprint, len(s), FingerprintLen)
	}
	n, err := fpEncoding.Decode(f[:], []byte(strings.ToUpper(s)))
	if err != nil || n != len(f) {
		return Fingerprint{}, fmt.Errorf("%w: %q is not base32", ErrInvalidFingerprint, s)
	}
	// Reject non-canonical encodings (stray low bits in the last character)
	// so that one key has exactly one text form.
	if f.String() != strings.ToLower(s) {
		return Fingerprint{}, fmt.Errorf("%w: %q is not canonical", ErrInvalidFingerprint, s)
	}
	if f.IsZero() {
		return Fingerprint{}, ErrZeroFingerprint
	}
	return f, nil
}

// MarshalText implements encoding.TextMarshaler. The zero Fingerprint
// marshals to empty text, as netip.Addr does, so that an unset key
// survives a round trip and never turns into a text that parses.
func (f Fingerprint) MarshalText() ([]byte, error) {
	if f.IsZero() {
		return []byte{}, nil
	}
	return []byte(f.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. Empty text gives the
// zero Fingerprint (no key); anything else must parse, so the all-zero
// text is refused with ErrZeroFingerprint.
func (f *Fingerprint) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*f = Fingerprint{}
		return nil
	}
	v, err := ParseFingerprint(string(b))
	if err != nil {
		return err
	}
	*f = v
	return nil
}
