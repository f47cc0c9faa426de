package sal

import (
	"context"
	"crypto"
	"net/netip"
	"sync"
	"testing"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/stretchr/testify/require"
)

func TestNewHostFromEnvironment(t *testing.T) {
	t.Setenv(resolve.EnvResolver, "memory:sal-env-test")
	server := newHost(t, Config{})
	client := newHost(t, Config{})
	l, err := server.Listen(testCtx(t), "env.demo")
	require.NoError(t, err)
	pingPong(t, client, l, "env.demo") // the two met in the named registry

	t.Setenv(resolve.EnvResolver, "")
	_, err = NewHost(Config{})
	require.ErrorIs(t, err, ErrNoResolver)
	t.Setenv(resolve.EnvResolver, "nonsense:x")
	_, err = NewHost(Config{})
	require.ErrorIs(t, err, resolve.ErrInvalid)
	require.Contains(t, err.Error(), resolve.EnvResolver)
}

// A Host that opened its resolver from the environment registers through
// it with proof of its key, and closes it (the leak check at the end of
// the run sees to the client's goroutines).
func TestNewHostFromEnvironmentRegistry(t *testing.T) {
	reg, err := registry.Listen("127.0.0.1:0", registry.Config{})
	require.NoError(t, err)
	defer reg.Close()
	t.Setenv(resolve.EnvResolver, reg.URL())
	server := newHost(t, Config{})
	client := newHost(t, Config{})
	l, err := server.Listen(testCtx(t), "env-registry.demo")
	require.NoError(t, err)
	pingPong(t, client, l, "env-registry.demo")
	require.NoError(t, server.Close())
	require.NoError(t, client.Close())
}

// signedBackend is a Memory that takes only signed registrations, and can
// be told to refuse them.
type signedBackend struct {
	*resolve.Memory
	mu     sync.Mutex
	keys   []resolve.Fingerprint
	refuse error
}

func (b *signedBackend) RegisterSigned(ctx context.Context, service string, ep resolve.Endpoint, key crypto.Signer) (resolve.Registration, error) {
	fp, err := resolve.FingerprintOf(key.Public())
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.keys = append(b.keys, fp)
	refuse := b.refuse
	b.mu.Unlock()
	if refuse != nil {
		return nil, &resolve.Error{Op: "register", Service: service, Err: refuse}
	}
	if fp != ep.Key {
		return nil, &resolve.Error{Op: "register", Service: service, Err: resolve.ErrUnsigned}
	}
	return b.Memory.Register(ctx, service, ep)
}

func (b *signedBackend) signedBy() []resolve.Fingerprint {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]resolve.Fingerprint(nil), b.keys...)
}

func TestListenRegistersSigned(t *testing.T) {
	b := &signedBackend{Memory: resolve.NewMemory()}
	server := newHost(t, Config{Resolver: b})
	client := newHost(t, Config{Resolver: b})
	l, err := server.Listen(testCtx(t), "signed.demo")
	require.NoError(t, err)
	require.Equal(t, []resolve.Fingerprint{server.Key()}, b.signedBy(), "signed with the Host's own key")
	pingPong(t, client, l, "signed.demo")

	// Re-registration after a Rebind is signed too.
	require.NoError(t, server.Rebind(testCtx(t), loopbackAddr(3)))
	require.Len(t, b.signedBy(), 2)
	eps, err := b.Resolve(testCtx(t), "signed.demo")
	require.NoError(t, err)
	require.Equal(t, server.LocalAddr(), eps[0].Addr)

	// A refused registration fails Listen, with the backend's reason.
	for _, refusal := range []error{resolve.ErrNotOwner, resolve.ErrUnsigned} {
		b.mu.Lock()
		b.refuse = refusal
		b.mu.Unlock()
		_, err = server.Listen(testCtx(t), "taken.demo")
		require.ErrorIs(t, err, refusal)
		var op *OpError
		require.ErrorAs(t, err, &op)
		require.Equal(t, "listen", op.Op)
		require.ErrorIs(t, client.Probe(testCtx(t), "taken.demo", endpointOf(server)), ErrNoListener,
			"a refused Listen leaves nothing behind")
	}
	b.mu.Lock()
	b.refuse = nil
	b.mu.Unlock()
	_, err = server.Listen(testCtx(t), "taken.demo")
	require.NoError(t, err)
}

// Registrations reach the registrar behind wrappers; a wrapper with none
// behind it means Listen registers nothing, as with a plain Resolver.
func TestListenRegistersThroughWrappers(t *testing.T) {
	mem := resolve.NewMemory()
	health := resolve.NewHealth(mem, resolve.ProberFunc(func(context.Context, string, resolve.Endpoint) error { return nil }), resolve.HealthConfig{})
	defer health.Close()
	h := newHost(t, Config{Resolver: health})
	_, err := h.Listen(testCtx(t), "wrapped.demo")
	require.NoError(t, err)
	eps, err := mem.Resolve(testCtx(t), "wrapped.demo")
	require.NoError(t, err)
	require.Equal(t, h.Key(), eps[0].Key)

	static := resolve.NewStatic(map[string][]netip.AddrPort{})
	bare := resolve.NewHealth(static, resolve.ProberFunc(func(context.Context, string, resolve.Endpoint) error { return nil }), resolve.HealthConfig{})
	defer bare.Close()
	h2 := newHost(t, Config{Resolver: bare})
	_, err = h2.Listen(testCtx(t), "unregistered.demo")
	require.NoError(t, err)
}
