package resolve_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

// A scheme this module ships as a plug-in, asked for by a program that
// does not link it, fails with ErrUnsupported and names the import. These
// tests link registry and dns (through sal), so they are hidden here, as
// in a program that uses resolve without sal.
func TestOpenNamesTheMissingPlugin(t *testing.T) {
	for _, tc := range []struct{ url, pkg string }{
		{"etcd://127.0.0.1:2379/roam/", "etcd"},
		{"registry://127.0.0.1:7700", "registry"},
		{"registry://127.0.0.1:7700?key=" + strings.Repeat("b", resolve.FingerprintLen), "registry"},
		{"dns://127.0.0.1:53/", "dns"},
		{"dns:///", "dns"},
	} {
		restore := resolve.HideScheme(tc.pkg)
		_, err := resolve.Open(context.Background(), tc.url)
		restore()
		require.ErrorIs(t, err, resolve.ErrUnsupported, tc.url)
		require.Contains(t, err.Error(), `import _ "github.com/roamnet/roam/resolve/`+tc.pkg+`"`, tc.url)
	}

	_, err := resolve.Open(context.Background(), "nosuch://x")
	require.ErrorIs(t, err, resolve.ErrInvalid)
	require.Contains(t, err.Error(), `unknown scheme "nosuch"`)
	require.Contains(t, err.Error(), "accepted forms: memory:")
}

// A registered scheme is opened by its Opener, and its form joins the
// list Open's errors give; registering one twice, or a built-in one,
// panics, as database/sql's Register does.
func TestRegisterScheme(t *testing.T) {
	var got *url.URL
	resolve.RegisterScheme("testscheme", "testscheme://anything", func(_ context.Context, u *url.URL) (resolve.Resolver, error) {
		got = u
		return resolve.NewMemory(), nil
	})
	r, err := resolve.Open(context.Background(), "testscheme://host:1/p")
	require.NoError(t, err)
	require.NotNil(t, r)
	require.Equal(t, "host:1", got.Host)

	_, err = resolve.Open(context.Background(), "nosuch://x")
	require.Contains(t, err.Error(), "testscheme://anything", "the registered form is listed")
	require.Contains(t, resolve.BadURL("x:", "why").Error(), "testscheme://anything")

	require.Panics(t, func() {
		resolve.RegisterScheme("testscheme", "", func(context.Context, *url.URL) (resolve.Resolver, error) { return nil, nil })
	})
	require.Panics(t, func() {
		resolve.RegisterScheme("memory", "", func(context.Context, *url.URL) (resolve.Resolver, error) { return nil, nil })
	})
	require.Panics(t, func() {
		resolve.RegisterScheme("Upper", "", func(context.Context, *url.URL) (resolve.Resolver, error) { return nil, nil })
	})
	require.Panics(t, func() { resolve.RegisterScheme("nilopener", "", nil) })
}
