package sal

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
)

// requireSaysEachThingOnce fails if err's text repeats itself: a word twice
// in a row ("resolve resolve"), a phrase of three words twice ("no resume
// within ... no resume within"), or a name or address twice ("dial
// echo.demo: resolve echo.demo").
func requireSaysEachThingOnce(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	text := err.Error()
	var words []string
	for _, w := range strings.Fields(text) {
		if w = strings.Trim(w, `:;,()"`); w != "" {
			words = append(words, strings.ToLower(w))
		}
	}
	seen := map[string]bool{}
	for i, w := range words {
		if i > 0 && w == words[i-1] {
			require.Failf(t, "a word twice in a row", "%q in %q", w, text)
		}
		if i >= 2 {
			phrase := strings.Join(words[i-2:i+1], " ")
			require.False(t, seen[phrase], "the phrase %q twice in %q", phrase, text)
			seen[phrase] = true
		}
		if strings.ContainsAny(w, ".") && len(w) > 3 { // a name or an address
			require.False(t, seen["\x00"+w], "%q twice in %q", w, text)
			seen["\x00"+w] = true
		}
	}
}

// The common failures say what went wrong once per layer, and still
// match their targets with errors.Is and errors.As.
func TestErrorTextsSayEachThingOnce(t *testing.T) {
	ctx := testCtx(t)
	mem := resolve.NewMemory()

	t.Run("unknown service", func(t *testing.T) {
		cache := resolve.NewCache(mem, resolve.CacheConfig{})
		defer cache.Close()
		for name, r := range map[string]resolve.Resolver{"memory": mem, "cache": cache} {
			h := newHost(t, Config{Resolver: r})
			_, err := h.Dial(ctx, "nope.demo")
			t.Logf("%s: %v", name, err)
			requireSaysEachThingOnce(t, err)
			require.ErrorIs(t, err, resolve.ErrNotFound)
			var op *OpError
			require.ErrorAs(t, err, &op)
			require.Equal(t, "nope.demo", op.Service)
			var re *resolve.Error
			require.ErrorAs(t, err, &re)
			require.Equal(t, "nope.demo", re.Service)
			require.Contains(t, err.Error(), "nope.demo")
		}
	})

	t.Run("unknown service, through the registry", func(t *testing.T) {
		reg, err := registry.Listen("127.0.0.1:0", registry.Config{})
		require.NoError(t, err)
		defer reg.Close()
		r, err := resolve.Open(ctx, reg.URL())
		require.NoError(t, err)
		defer r.(interface{ Close() error }).Close()
		h := newHost(t, Config{Resolver: r})
		_, err = h.Dial(ctx, "nope.demo")
		t.Log(err)
		requireSaysEachThingOnce(t, err)
		require.ErrorIs(t, err, resolve.ErrNotFound)
		require.Contains(t, err.Error(), "nope.demo")
	})

	t.Run("invalid service ID", func(t *testing.T) {
		h := newHost(t, Config{Resolver: mem})
		_, err := h.Dial(ctx, "bad..demo")
		t.Log(err)
		requireSaysEachThingOnce(t, err)
		require.ErrorIs(t, err, ErrInvalidServiceID)
		var ie *ServiceIDError
		require.ErrorAs(t, err, &ie)
		var op *OpError
		require.ErrorAs(t, err, &op)
		require.Equal(t, "bad..demo", op.Service)
		require.Contains(t, err.Error(), `"bad..demo"`)
	})

	t.Run("endpoint that does not answer", func(t *testing.T) {
		silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(t, err)
		defer silent.Close()
		at := silent.LocalAddr().(*net.UDPAddr).AddrPort()
		h := newHost(t, Config{Resolver: resolve.NewStatic(map[string][]netip.AddrPort{"quiet.demo": {at}})})
		dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err = h.Dial(dctx, "quiet.demo")
		t.Log(err)
		requireSaysEachThingOnce(t, err)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var op *OpError
		require.ErrorAs(t, err, &op)
		require.Equal(t, at, op.Endpoint)
		require.True(t, op.Timeout())
		require.Contains(t, err.Error(), at.String())
	})

	t.Run("no listener", func(t *testing.T) {
		server, client, l := pair(t, "here.demo")
		defer l.Close()
		client.Table().Set(Rule{Service: "elsewhere.demo", Action: ActionEndpoints,
			Endpoints: []resolve.Endpoint{{Addr: server.LocalAddr()}}})
		_, err := client.Dial(ctx, "elsewhere.demo")
		t.Log(err)
		requireSaysEachThingOnce(t, err)
		require.ErrorIs(t, err, ErrNoListener)
	})
}

// A flow whose resume times out says so once, on both ends, and its errors
// still match ErrFlowLost, *OpError and the first failure.
func TestResumeTimeoutErrorSaysEachThingOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		// cut: the dialer's connection ends at once, so resume attempts
		// run (and time out) before the ResumeTimeout passes; else the
		// path goes dark, and the first attempt starts as it passes.
		cut bool
	}{{"dark path", false}, {"connection closed, then dark", true}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBedWith(t, calm, Config{ResumeTimeout: 3 * time.Second}, Config{ResumeTimeout: 3 * time.Second})
				roundTrip(t, b.c, b.sc, "before the path dies")
				b.path.Blackout(time.Hour)
				if tc.cut {
					b.c.mu.Lock()
					qc := b.c.car.sess.qc
					b.c.mu.Unlock()
					qc.CloseWithError(0, "cut")
				}
				_, err := b.c.Read(make([]byte, 1))
				t.Log("dialer:", err)
				requireSaysEachThingOnce(t, err)
				require.ErrorIs(t, err, ErrFlowLost)
				var op *OpError
				require.ErrorAs(t, err, &op)
				require.Equal(t, "read", op.Op)
				require.Equal(t, 1, strings.Count(err.Error(), "no resume within 3s"))
				require.Contains(t, err.Error(), "first failure")
				if tc.cut {
					require.Contains(t, err.Error(), "last attempt", "an attempt ran its course")
					require.ErrorIs(t, err, ErrUnreachable)
				}

				_, err = b.sc.Read(make([]byte, 1))
				t.Log("listener:", err)
				requireSaysEachThingOnce(t, err)
				require.ErrorIs(t, err, ErrFlowLost)
				require.NotErrorIs(t, err, os.ErrDeadlineExceeded)
			})
		})
	}
}

// The texts of the errors themselves, layer by layer.
func TestOpErrorText(t *testing.T) {
	ep := netip.MustParseAddrPort("192.0.2.1:7000")
	for _, tt := range []struct {
		err  *OpError
		want string
	}{
		{&OpError{Op: "dial", Service: "web.demo", Err: &resolve.Error{Op: "resolve", Service: "web.demo", Err: resolve.ErrNotFound}},
			"sal dial: resolve web.demo: not found"},
		{&OpError{Op: "dial", Service: "rk--aaaa.web.demo", Err: &resolve.Error{Op: "resolve", Service: "web.demo", Err: resolve.ErrNotFound}},
			"sal dial rk--aaaa.web.demo: resolve web.demo: not found"},
		{&OpError{Op: "dial", Service: "web.demo", Endpoint: ep, Err: &unreachableError{addr: ep, err: context.DeadlineExceeded}},
			"sal dial web.demo: endpoint unreachable: 192.0.2.1:7000: context deadline exceeded"},
		{&OpError{Op: "read", Service: "web.demo", Endpoint: ep, Err: errors.Join(ErrFlowLost)},
			"sal read web.demo via 192.0.2.1:7000: flow lost"},
		{&OpError{Op: "close", Err: net.ErrClosed}, "sal close: use of closed network connection"},
	} {
		require.Equal(t, tt.want, tt.err.Error())
	}
}
