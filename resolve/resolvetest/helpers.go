package resolvetest

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
)

// Clock is a clock for a backend's or a Cache's Now that moves only when
// told, so that tests of TTLs and expiry need not sleep.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock at a fixed instant.
func NewClock() *Clock { return &Clock{now: time.Unix(1_700_000_000, 0)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// NewKey returns a fresh Ed25519 key, such as a service's.
func NewKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Fingerprint returns the fingerprint of k's public key.
func Fingerprint(t testing.TB, k crypto.Signer) resolve.Fingerprint {
	t.Helper()
	fp, err := resolve.FingerprintOf(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return fp
}
