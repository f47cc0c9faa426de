package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/resolvetest"
	"github.com/roamnet/roam/sal"
	"github.com/stretchr/testify/require"
)

// The status line shows flows, bytes and the last move, and a log line
// written meanwhile goes above it rather than through it.
func TestStatusLine(t *testing.T) {
	mem := resolve.NewMemory()
	server, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	defer server.Close()
	ctx := context.Background()
	l, err := server.Listen(ctx, "st.demo")
	require.NoError(t, err)
	defer l.Close()
	client, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	defer client.Close()
	c, err := client.Dial(ctx, "st.demo")
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write(make([]byte, 2500))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return client.ServiceStats()["st.demo"].BytesSent == 2500 }, 5*time.Second, time.Millisecond)

	out := new(resolvetest.LogBuffer)
	st := newStatus(out)
	st.event(sal.Event{Kind: sal.EventResumed, Stall: 42 * time.Millisecond, Time: time.Now(), To: netip.MustParseAddrPort("127.0.0.1:9")})
	st.start(client)
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "flows open") }, 5*time.Second, time.Millisecond)
	line := out.String()
	require.Contains(t, line, "1 flows open · sent 2.5 kB · received 0 B")
	require.Contains(t, line, "last: resumed (stall 42ms)")

	_, err = st.Write([]byte("time=... level=INFO msg=hello\n"))
	require.NoError(t, err)
	st.stop()
	got := out.String()
	i := strings.Index(got, "msg=hello")
	require.Positive(t, i)
	require.True(t, strings.HasSuffix(got[:i], "\r\033[Ktime=... level=INFO "), "the line is cleared before a log line: %q", got)
	require.True(t, strings.HasSuffix(got, "\r\033[K"), "stop clears the line: %q", got)
	require.Equal(t, "999 B", bytesText(999))
	require.Equal(t, "1.5 MB", bytesText(1_500_000))
}
