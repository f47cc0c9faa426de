// Package resolvetest is a conformance suite for resolve backends, in the
// manner of go-libp2p's transport tests: every backend, and every wrapper
// such as resolve.Cache, should pass Run.
//
// The suite tests what the backend can do. Resolve is always tested;
// Registrar is found by type assertion on the backend or, for wrappers, on
// what its Unwrap() resolve.Resolver chain returns; Watcher is found by type
// assertion, and its tests are skipped if Watch reports ErrUnsupported.
// Changes are awaited rather than expected at once, so caching and remote
// backends, which are eventually consistent, pass too.
//
// A backend that takes only signed registrations runs RunSigned instead:
// the suite then registers through resolve.SignedRegistrar (found the same
// way), and also checks that a service bound to one key refuses another.
package resolvetest

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

// Settle bounds how long the suite waits for a change to become visible,
// and for a prompt return. Remote backends may raise it.
var Settle = 5 * time.Second

// Run runs the suite. newBackend is called once per subtest and must return
// a fresh backend; it should release the backend with t.Cleanup.
func Run(t *testing.T, newBackend func(t *testing.T) resolve.Resolver) {
	t.Helper()
	run(t, &suite{}, newBackend)
}

// RunSigned runs the suite against a backend whose registrations must be
// signed: every registration goes through RegisterSigned with one key that
// the suite makes, so every endpoint it registers pins that key. Its Owner
// test registers under a second key too.
func RunSigned(t *testing.T, newBackend func(t *testing.T) resolve.Resolver) {
	t.Helper()
	run(t, &suite{key: newKey(t)}, newBackend)
}

func run(t *testing.T, s *suite, newBackend func(t *testing.T) resolve.Resolver) {
	t.Helper()
	if s.key != nil {
		fp, err := resolve.FingerprintOf(s.key.Public())
		require.NoError(t, err)
		s.fp = fp
	}
	tests := []subtest{
		{"NotFound", testNotFound},
		{"CanceledContext", testCanceledContext},
		{"RegisterResolve", testRegisterResolve},
		{"TwoEndpoints", testTwoEndpoints},
		{"CloseWithdraws", testCloseWithdraws},
		{"DoubleClose", testDoubleClose},
		{"CaseFolding", testCaseFolding},
		{"InvalidRegistration", testInvalidRegistration},
		{"Watch", testWatch},
		{"WatchCurrent", testWatchCurrent},
		{"Concurrent", testConcurrent},
	}
	if s.key != nil {
		tests = append(tests, subtest{"Owner", testOwner})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, s, newBackend(t)) })
	}
}

type subtest struct {
	name string
	fn   func(t *testing.T, s *suite, r resolve.Resolver)
}

// suite is what one Run or RunSigned call shares among its subtests.
type suite struct {
	key crypto.Signer // RunSigned's key; nil for Run
	fp  resolve.Fingerprint
}

func newKey(t *testing.T) crypto.Signer {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return key
}

var serial atomic.Uint64

// name returns a service ID that no other subtest uses, so that a backend
// shared between subtests (a remote registry) cannot confuse them.
func name(t *testing.T) string {
	return fmt.Sprintf("rt-%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), serial.Add(1))
}

// endpoint returns a distinct loopback endpoint; nothing is dialled. Its
// key is a made-up one, or RunSigned's, the only one a signature can prove.
func (s *suite) endpoint(i int) resolve.Endpoint {
	ep := resolve.Endpoint{
		Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i)}), uint16(4000+i)),
		Key:  resolve.Fingerprint{byte(i + 1)},
	}
	if s.key != nil {
		ep.Key = s.fp
	}
	return ep
}

// findRegistrar returns r, or the first resolver down its Unwrap chain,
// that is a Registrar (a SignedRegistrar, made to look like a Registrar,
// under RunSigned); nil if none is.
func (s *suite) findRegistrar(r resolve.Resolver) resolve.Registrar {
	for r != nil {
		if s.key == nil {
			if reg, ok := r.(resolve.Registrar); ok {
				return reg
			}
		} else if sr, ok := r.(resolve.SignedRegistrar); ok {
			return signing{sr, s.key}
		}
		u, ok := r.(interface{ Unwrap() resolve.Resolver })
		if !ok {
			return nil
		}
		r = u.Unwrap()
	}
	return nil
}

// signing registers through RegisterSigned with one key.
type signing struct {
	sr  resolve.SignedRegistrar
	key crypto.Signer
}

func (g signing) Register(ctx context.Context, service string, ep resolve.Endpoint) (resolve.Registration, error) {
	return g.sr.RegisterSigned(ctx, service, ep, g.key)
}

func (s *suite) registrar(t *testing.T, r resolve.Resolver) resolve.Registrar {
	t.Helper()
	reg := s.findRegistrar(r)
	if reg == nil {
		if s.key != nil {
			t.Skip("backend is not a SignedRegistrar")
		}
		t.Skip("backend is not a Registrar")
	}
	return reg
}

func watcher(t *testing.T, r resolve.Resolver) resolve.Watcher {
	t.Helper()
	w, ok := r.(resolve.Watcher)
	if !ok {
		t.Skip("backend is not a Watcher")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := w.Watch(ctx, name(t)); errors.Is(err, resolve.ErrUnsupported) {
		t.Skip("backend does not support Watch")
	}
	return w
}

func register(t *testing.T, reg resolve.Registrar, service string, ep resolve.Endpoint) resolve.Registration {
	t.Helper()
	rg, err := reg.Register(context.Background(), service, ep)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rg.Close() })
	return rg
}

// same reports whether got holds exactly the addresses and keys of want, in
// any order. TTLs are the backend's business.
func same(got, want []resolve.Endpoint) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g resolve.Endpoint) bool { return g.Addr == w.Addr && g.Key == w.Key }) {
			return false
		}
	}
	return true
}

// eventually waits until service resolves to want (nil: not found).
func eventually(t *testing.T, r resolve.Resolver, service string, want []resolve.Endpoint) {
	t.Helper()
	var got []resolve.Endpoint
	var err error
	deadline := time.Now().Add(Settle)
	for {
		got, err = r.Resolve(context.Background(), service)
		if (want == nil && errors.Is(err, resolve.ErrNotFound)) || (want != nil && err == nil && same(got, want)) {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("Resolve(%q) = %v, %v; want %v within %v", service, got, err, want, Settle)
}

// next waits until ch delivers want (nil: the empty set), skipping the
// intermediate sets a watcher may legitimately deliver.
func next(t *testing.T, ch <-chan []resolve.Endpoint, want []resolve.Endpoint) {
	t.Helper()
	timeout := time.After(Settle)
	for {
		select {
		case got, ok := <-ch:
			require.True(t, ok, "watch channel closed early")
			if same(got, want) {
				return
			}
		case <-timeout:
			t.Fatalf("watch did not deliver %v within %v", want, Settle)
		}
	}
}

func closed(t *testing.T, ch <-chan []resolve.Endpoint) {
	t.Helper()
	timeout := time.After(Settle)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("watch channel not closed within %v of its context ending", Settle)
		}
	}
}

func testNotFound(t *testing.T, s *suite, r resolve.Resolver) {
	eps, err := r.Resolve(context.Background(), name(t))
	require.ErrorIs(t, err, resolve.ErrNotFound)
	require.Empty(t, eps)
	var e *resolve.Error
	require.ErrorAs(t, err, &e)
	require.NotEmpty(t, e.Op)
	require.NotEmpty(t, e.Service)
}

// testCanceledContext checks that nothing waits on a dead context. An
// answer is allowed (a cache hit, an in-process lookup), and so is an error
// that says why.
func testCanceledContext(t *testing.T, s *suite, r resolve.Resolver) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	prompt(t, "Resolve", func() {
		_, err := r.Resolve(ctx, name(t))
		if err != nil && !errors.Is(err, context.Canceled) {
			require.ErrorIs(t, err, resolve.ErrNotFound)
		}
	})
	if reg := s.findRegistrar(r); reg != nil {
		prompt(t, "Register", func() {
			rg, err := reg.Register(ctx, name(t), s.endpoint(0))
			if err == nil {
				require.NoError(t, rg.Close())
			}
		})
	}
	if w, ok := r.(resolve.Watcher); ok {
		prompt(t, "Watch", func() {
			if ch, err := w.Watch(ctx, name(t)); err == nil {
				closed(t, ch)
			}
		})
	}
}

func prompt(t *testing.T, what string, fn func()) {
	t.Helper()
	start := time.Now()
	fn()
	require.Less(t, time.Since(start), Settle, "%s with a canceled context took too long", what)
}

func testRegisterResolve(t *testing.T, s *suite, r resolve.Resolver) {
	reg := s.registrar(t, r)
	svc := name(t)
	register(t, reg, svc, s.endpoint(1))
	eventually(t, r, svc, []resolve.Endpoint{s.endpoint(1)})
}

func testTwoEndpoints(t *testing.T, s *suite, r resolve.Resolver) {
	reg := s.registrar(t, r)
	svc := name(t)
	register(t, reg, svc, s.endpoint(1))
	register(t, reg, svc, s.endpoint(2))
	eventually(t, r, svc, []resolve.Endpoint{s.endpoint(1), s.endpoint(2)})
}

func testCloseWithdraws(t *testing.T, s *suite, r resolve.Resolver) {
	reg := s.registrar(t, r)
	svc := name(t)
	a := register(t, reg, svc, s.endpoint(1))
	b := register(t, reg, svc, s.endpoint(2))
	eventually(t, r, svc, []resolve.Endpoint{s.endpoint(1), s.endpoint(2)})
	require.NoError(t, a.Close())
	eventually(t, r, svc, []resolve.Endpoint{s.endpoint(2)})
	require.NoError(t, b.Close())
	eventually(t, r, svc, nil)
}

func testDoubleClose(t *testing.T, s *suite, r resolve.Resolver) {
	reg := s.registrar(t, r)
	rg := register(t, reg, name(t), s.endpoint(1))
	require.NoError(t, rg.Close())
	require.NoError(t, rg.Close())
}

func testCaseFolding(t *testing.T, s *suite, r resolve.Resolver) {
	reg := s.registrar(t, r)
	svc := name(t)
	register(t, reg, "Mixed-"+strings.ToUpper(svc), s.endpoint(1))
	eventually(t, r, "mixed-"+svc, []resolve.Endpoint{s.endpoint(1)})
	eventually(t, r, "MIXED-"+strings.ToUpper(svc), []resolve.Endpoint{s.endpoint(1)})
}

func testInvalidRegistration(t *testing.T, s *suite, r resolve.Resolver) {
	reg := s.registrar(t, r)
	_, err := reg.Register(context.Background(), "", s.endpoint(1))
	require.Error(t, err, "empty service name")
	_, err = reg.Register(context.Background(), name(t), resolve.Endpoint{})
	require.Error(t, err, "endpoint without an address")
}

// testOwner checks SignedRegistrar's promise: a name is bound to the key
// of its first registration, a self-certifying ID to its own key, and a
// registration under any other key fails with ErrNotOwner. RunSigned only.
func testOwner(t *testing.T, s *suite, r resolve.Resolver) {
	reg := s.registrar(t, r).(signing)
	svc := name(t)
	register(t, reg, svc, s.endpoint(1))
	eventually(t, r, svc, []resolve.Endpoint{s.endpoint(1)})

	rival := newKey(t)
	rivalFP, err := resolve.FingerprintOf(rival.Public())
	require.NoError(t, err)
	_, err = reg.sr.RegisterSigned(context.Background(), svc, resolve.Endpoint{Addr: s.endpoint(2).Addr}, rival)
	require.ErrorIs(t, err, resolve.ErrNotOwner, "a bound name refuses another key")
	eventually(t, r, svc, []resolve.Endpoint{s.endpoint(1)})

	pinned := "rk--" + rivalFP.String() + "." + name(t)
	_, err = reg.Register(context.Background(), pinned, s.endpoint(1))
	require.ErrorIs(t, err, resolve.ErrNotOwner, "a self-certifying ID refuses any key but its own")
	rg, err := reg.sr.RegisterSigned(context.Background(), pinned, resolve.Endpoint{Addr: s.endpoint(3).Addr}, rival)
	require.NoError(t, err, "a self-certifying ID takes its own key")
	t.Cleanup(func() { _ = rg.Close() })
	eventually(t, r, pinned, []resolve.Endpoint{{Addr: s.endpoint(3).Addr, Key: rivalFP}})
}

func testWatch(t *testing.T, s *suite, r resolve.Resolver) {
	w := watcher(t, r)
	reg := s.registrar(t, r)
	svc := name(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := w.Watch(ctx, svc)
	require.NoError(t, err)
	next(t, ch, nil)
	a := register(t, reg, svc, s.endpoint(1))
	next(t, ch, []resolve.Endpoint{s.endpoint(1)})
	b := register(t, reg, svc, s.endpoint(2))
	next(t, ch, []resolve.Endpoint{s.endpoint(1), s.endpoint(2)})
	require.NoError(t, a.Close())
	next(t, ch, []resolve.Endpoint{s.endpoint(2)})
	require.NoError(t, b.Close())
	next(t, ch, nil)
	cancel()
	closed(t, ch)
}

func testWatchCurrent(t *testing.T, s *suite, r resolve.Resolver) {
	w := watcher(t, r)
	reg := s.registrar(t, r)
	svc := name(t)
	register(t, reg, svc, s.endpoint(1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := w.Watch(ctx, svc)
	require.NoError(t, err)
	next(t, ch, []resolve.Endpoint{s.endpoint(1)})
}

// testConcurrent mixes every ability on shared and private names; its
// value is in running under -race.
func testConcurrent(t *testing.T, s *suite, r resolve.Resolver) {
	shared := name(t)
	reg := s.findRegistrar(r)
	w, _ := r.(resolve.Watcher)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			own := fmt.Sprintf("%s-%d", shared, g)
			for i := range 50 {
				for _, svc := range []string{shared, own} {
					_, err := r.Resolve(ctx, svc)
					if err != nil && !errors.Is(err, resolve.ErrNotFound) {
						t.Errorf("Resolve(%q): %v", svc, err)
						return
					}
				}
				if w != nil && i%10 == 0 {
					wctx, wcancel := context.WithCancel(ctx)
					if ch, err := w.Watch(wctx, shared); err == nil {
						<-ch
					}
					wcancel()
				}
				if reg != nil {
					rg, err := reg.Register(ctx, []string{shared, own}[i%2], s.endpoint(g*50%200+i))
					if err != nil {
						t.Errorf("Register: %v", err)
						return
					}
					if err := rg.Close(); err != nil {
						t.Errorf("Close: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}
