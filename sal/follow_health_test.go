package sal

import (
	"context"
	"errors"
	"sync/atomic"
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

// When a health checker loses sight of a service's sole provider (its
// probes fail, as during a handover, while the provider lives), the
// resolver answers none (resolve.ErrAllDown) and a new dial fails at once
// with that error; the provider's existing flows stay, and one whose
// connection breaks still resumes at the provider, byte-exact.
func TestFlowSurvivesSoleProviderAllDown(t *testing.T) {
	var down atomic.Bool
	prober := resolve.ProberFunc(func(ctx context.Context, service string, ep resolve.Endpoint) error {
		if down.Load() {
			return errors.New("test: probe lost in a handover")
		}
		return nil
	})
	mem := resolve.NewMemory()
	health := resolve.NewHealth(mem, prober, resolve.HealthConfig{Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond, Failures: 2})
	defer health.Close()
	var clientLog eventLog
	server := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: health, OnEvent: clientLog.record, EndpointTimeout: 500 * time.Millisecond, ResumeTimeout: 10 * time.Second})
	l, err := server.Listen(testCtx(t), "sole.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "sole.demo")
	echo(t, c, sc, "before")

	down.Store(true)
	require.Eventually(t, func() bool {
		st := health.Status("sole.demo")
		return len(st) == 1 && !st[0].Up
	}, 10*time.Second, 10*time.Millisecond, "the sole provider marked down")
	_, err = health.Resolve(testCtx(t), "sole.demo")
	require.ErrorIs(t, err, resolve.ErrAllDown)
	fresh := newHost(t, Config{Resolver: health})
	start := time.Now()
	_, err = fresh.Dial(testCtx(t), "sole.demo")
	require.ErrorIs(t, err, resolve.ErrAllDown, "a new dial is told why")
	require.ErrorIs(t, err, resolve.ErrNotFound)
	require.Less(t, time.Since(start), quick, "and fails without waiting on the endpoint")

	echo(t, c, sc, "while down")
	require.Zero(t, clientLog.count(EventSuspended), "an all-down set moves no flow")
	killConn(c)
	transfer(t, c, sc, 1<<20, nil)
	require.Equal(t, 1, c.Stats().Resumes)
	require.Equal(t, server.LocalAddr(), c.RemoteAddr().(Addr).Endpoint, "resumed at the provider that was down")
	require.Zero(t, clientLog.count(EventLost))
}
