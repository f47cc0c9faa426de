package sal

import (
	"encoding/json"
	"expvar"
	"io"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// exchange writes toServer bytes from c and toClient from sc, half-closes
// both, and reads everything on both ends.
func exchange(t *testing.T, c, sc *Conn, toServer, toClient int) {
	t.Helper()
	errs := make(chan error, 2)
	send := func(w *Conn, n int, seed uint64) {
		_, err := w.Write(randomBytes(n, seed))
		if err == nil {
			err = w.CloseWrite()
		}
		errs <- err
	}
	go send(c, toServer, 1)
	go send(sc, toClient, 2)
	got, err := io.Copy(io.Discard, sc)
	require.NoError(t, err)
	require.Equal(t, int64(toServer), got)
	got, err = io.Copy(io.Discard, c)
	require.NoError(t, err)
	require.Equal(t, int64(toClient), got)
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
}

// statsOf waits until cond holds for h's stats of service, and returns them.
func statsOf(t *testing.T, h *Host, service string, cond func(ServiceStats) bool) ServiceStats {
	t.Helper()
	var st ServiceStats
	require.Eventually(t, func() bool {
		st = h.ServiceStats()[service]
		return cond(st)
	}, quick, time.Millisecond, "stats of %s: %+v", service, st)
	return st
}

func noneOpen(st ServiceStats) bool { return st.FlowsOpen == 0 }

func TestServiceStatsCountFlowsAndBytes(t *testing.T) {
	server, client, l := pair(t, "acct.demo")
	const flows, toServer, toClient = 3, 300_001, 70_003
	var conns [][2]*Conn
	for range flows {
		c, sc := openPair(t, client, l, "acct.demo")
		conns = append(conns, [2]*Conn{c, sc})
	}
	require.Equal(t, int64(flows), client.ServiceStats()["acct.demo"].FlowsOpen)
	require.Equal(t, int64(flows), server.ServiceStats()["acct.demo"].FlowsOpen)
	for _, p := range conns {
		exchange(t, p[0], p[1], toServer, toClient)
		p[0].Close()
		p[1].Close()
	}
	require.Equal(t, ServiceStats{
		FlowsDialed:   flows,
		BytesSent:     flows * toServer,
		BytesReceived: flows * toClient,
	}, statsOf(t, client, "acct.demo", noneOpen))
	require.Equal(t, ServiceStats{
		FlowsAccepted: flows,
		BytesSent:     flows * toClient,
		BytesReceived: flows * toServer,
	}, statsOf(t, server, "acct.demo", noneOpen))
	require.NotContains(t, client.ServiceStats(), "other.demo")
}

// Resumes are counted at both ends; replayed bytes are not counted again.
func TestServiceStatsCountResumes(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, FlowBuffer: 1 << 20})
	client := newHost(t, Config{Resolver: mem, FlowBuffer: 1 << 20})
	l, err := server.Listen(testCtx(t), "resume-acct.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "resume-acct.demo")
	const total, kills = 8 << 20, 3
	progress, done := spread(total, kills, func(int) { killConn(c) })
	transfer(t, c, sc, total, progress)
	require.Equal(t, kills, *done)
	c.Close()
	sc.Close()

	cs := statsOf(t, client, "resume-acct.demo", noneOpen)
	ss := statsOf(t, server, "resume-acct.demo", noneOpen)
	require.Positive(t, cs.Resumes)
	require.Equal(t, uint64(c.Stats().Resumes), cs.Resumes)
	require.Equal(t, uint64(sc.Stats().Resumes), ss.Resumes)
	require.Equal(t, uint64(total), cs.BytesSent, "replays are not application bytes")
	require.Equal(t, uint64(total), cs.BytesReceived)
	require.Equal(t, uint64(total), ss.BytesSent)
	require.Equal(t, uint64(total), ss.BytesReceived)
	require.Zero(t, cs.FlowsLost+ss.FlowsLost)
}

func TestServiceStatsCountMigrationsAndLosses(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: mem})
	l, err := server.Listen(testCtx(t), "mig.demo")
	require.NoError(t, err)
	openPair(t, client, l, "mig.demo")
	openPair(t, client, l, "mig.demo") // two flows, one connection: one migration

	require.NoError(t, client.Rebind(testCtx(t), loopbackAddr(1)))
	require.Equal(t, uint64(1), client.ServiceStats()["mig.demo"].Migrations)
	require.NoError(t, client.Rebind(testCtx(t), loopbackAddr(2)))
	require.Equal(t, uint64(2), client.ServiceStats()["mig.demo"].Migrations)

	// The peer shutting down ends both flows for good.
	require.NoError(t, server.Close())
	st := statsOf(t, client, "mig.demo", noneOpen)
	require.Equal(t, uint64(2), st.FlowsLost)
	require.Equal(t, uint64(2), st.FlowsDialed)
	st = server.ServiceStats()["mig.demo"]
	require.Equal(t, uint64(2), st.FlowsLost)
	require.Zero(t, st.FlowsOpen)
}

func TestServiceStatsExpvar(t *testing.T) {
	_, client, l := pair(t, "expvar.demo")
	c := pingPong(t, client, l, "expvar.demo")
	c.Close()
	name := client.statsName
	require.Equal(t, client.Key().String()[:16], name)

	var all map[string]map[string]ServiceStats
	require.NoError(t, json.Unmarshal([]byte(expvar.Get("roam").String()), &all))
	require.Contains(t, all, name)
	require.Contains(t, all[name], "expvar.demo")
	require.Equal(t, uint64(1), all[name]["expvar.demo"].FlowsDialed)
	require.Equal(t, uint64(4), all[name]["expvar.demo"].BytesSent)

	// Hosts that share a key get names of their own.
	twin := newHost(t, Config{Resolver: resolve.NewMemory(), Key: client.id.key})
	require.Equal(t, name+"-2", twin.statsName)

	require.NoError(t, client.Close())
	require.Nil(t, roamVars.Get(name), "a closed Host leaves the map")
	require.NotNil(t, roamVars.Get(twin.statsName))
	all = nil
	require.NoError(t, json.Unmarshal([]byte(expvar.Get("roam").String()), &all))
	require.NotContains(t, all, name)
}
