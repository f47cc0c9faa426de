package sal

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// TestReplayBufferBounds checks that a writer whose peer does not read
// blocks once the flow keeps FlowBuffer unacknowledged bytes, that the
// Host-wide budget caps all flows together, and that reading frees both.
func TestReplayBufferBounds(t *testing.T) {
	const flowBuf, hostBuf = 256 << 10, 384 << 10
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: mem, FlowBuffer: flowBuf, HostBuffer: hostBuf})
	l, err := server.Listen(testCtx(t), "bounded.demo")
	require.NoError(t, err)
	c1, s1 := openPair(t, client, l, "bounded.demo")
	c2, s2 := openPair(t, client, l, "bounded.demo")

	fill := func(c *Conn) int {
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		defer c.SetWriteDeadline(time.Time{})
		n, err := c.Write(make([]byte, 4<<20))
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		require.True(t, ne.Timeout(), "a full buffer blocks Write until its deadline")
		return n
	}
	n1 := fill(c1)
	require.LessOrEqual(t, n1, flowBuf, "one flow keeps at most FlowBuffer bytes")
	require.Greater(t, n1, 0)
	n2 := fill(c2)
	require.LessOrEqual(t, n1+n2, hostBuf, "all flows together keep at most HostBuffer bytes")
	require.LessOrEqual(t, client.budget.inUse(), hostBuf)

	// Reading what was written frees the room again.
	for _, p := range []struct {
		s *Conn
		n int
	}{{s1, n1}, {s2, n2}} {
		_, err := io.ReadFull(p.s, make([]byte, p.n))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return client.budget.inUse() == 0 }, quick, time.Millisecond,
		"acknowledged bytes go back to the Host's budget")
	_, err = c1.Write(make([]byte, flowBuf))
	require.NoError(t, err)
}
