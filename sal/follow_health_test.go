package sal

import (
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// When a health checker leaves a live provider out of the answers, as a
// resolve.Health does when its probes fail but flows still work, the
// flows to that provider stay where they are, and if their path fails
// they resume there, though the resolver lists only another provider.
func TestFlowSurvivesProviderLeftOutOfAnswers(t *testing.T) {
	var clientLog eventLog
	mem := resolve.NewMemory()
	a := newHost(t, Config{Resolver: mem})
	b := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: mem, OnEvent: clientLog.record, EndpointTimeout: 500 * time.Millisecond})
	la, err := a.Listen(testCtx(t), "unhealthy.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, la, "unhealthy.demo")
	_, err = b.Listen(testCtx(t), "unhealthy.demo")
	require.NoError(t, err)

	// A's registration goes, A stays: the watch now lists only B.
	la.mu.Lock()
	reg := la.reg
	la.mu.Unlock()
	require.NoError(t, reg.Close())
	eps, err := mem.Resolve(testCtx(t), "unhealthy.demo")
	require.NoError(t, err)
	require.Equal(t, []resolve.Endpoint{{Addr: b.LocalAddr(), Key: b.Key()}}, eps)

	echo(t, c, sc, "still here")
	time.Sleep(50 * time.Millisecond) // the watch has long been delivered
	require.Zero(t, clientLog.count(EventSuspended), "no endpoint listed could take the flow over")

	killConn(c)
	echo(t, c, sc, "after a kill")
	require.Equal(t, 1, c.Stats().Resumes)
	require.Equal(t, a.LocalAddr(), c.RemoteAddr().(Addr).Endpoint, "resumed at the provider left out")
	require.Zero(t, clientLog.count(EventLost))
}
