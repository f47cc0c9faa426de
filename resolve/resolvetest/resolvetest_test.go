package resolvetest_test

import (
	"context"
	"crypto"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/resolvetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun checks the suite against the reference backend; package resolve
// runs it against every backend.
func TestRun(t *testing.T) {
	resolvetest.Run(t, func(t *testing.T) resolve.Resolver {
		m := resolve.NewMemory()
		t.Cleanup(func() { _ = m.Close() })
		return m
	})
}

// TestRunSigned checks the signed suite against signedMemory, a reference
// SignedRegistrar that takes nothing unsigned.
func TestRunSigned(t *testing.T) {
	resolvetest.RunSigned(t, func(t *testing.T) resolve.Resolver {
		m := resolve.NewMemory()
		t.Cleanup(func() { _ = m.Close() })
		return &signedMemory{Memory: m, owners: make(map[string]resolve.Fingerprint)}
	})
}

// signedMemory binds each name to its first registration's key, as a
// SignedRegistrar must. Embedding keeps Memory's Register reachable, but the
// signed suite must not use it; Register below refuses to prove so.
type signedMemory struct {
	*resolve.Memory
	mu     sync.Mutex
	owners map[string]resolve.Fingerprint
}

func (s *signedMemory) Register(context.Context, string, resolve.Endpoint) (resolve.Registration, error) {
	return nil, resolve.ErrUnsigned
}

func (s *signedMemory) RegisterSigned(ctx context.Context, service string, ep resolve.Endpoint, key crypto.Signer) (resolve.Registration, error) {
	fp, err := resolve.FingerprintOf(key.Public())
	if err != nil {
		return nil, err
	}
	if ep.Key.IsZero() {
		ep.Key = fp
	}
	if ep.Key != fp {
		return nil, resolve.ErrInvalid
	}
	name := strings.ToLower(service)
	s.mu.Lock()
	if err := resolve.CheckOwner(name, fp, s.owners[name]); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if _, ok := s.owners[name]; !ok {
		s.owners[name] = fp
	}
	s.mu.Unlock()
	return s.Memory.Register(ctx, service, ep)
}
