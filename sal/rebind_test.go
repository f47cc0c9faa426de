package sal

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// eventLog records a Host's events, and when they came.
type eventLog struct {
	mu     sync.Mutex
	events []Event
	at     []time.Time
}

func (l *eventLog) record(e Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.at = append(l.at, time.Now())
	l.mu.Unlock()
}

// firstAfter returns when the first event of one of kinds came after t.
func (l *eventLog) firstAfter(t time.Time, kinds ...EventKind) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, e := range l.events {
		if l.at[i].After(t) && slices.Contains(kinds, e.Kind) {
			return l.at[i], true
		}
	}
	return time.Time{}, false
}

func (l *eventLog) count(kind EventKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// Linux routes all of 127.0.0.0/8 to loopback, so a Host can move between
// loopback addresses as it would between interfaces.
func loopbackAddr(i int) string { return fmt.Sprintf("127.0.0.%d:0", 2+i%200) }

func TestRebindClientMigratesMidStream(t *testing.T) {
	var serverLog, clientLog eventLog
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, OnEvent: serverLog.record})
	client := newHost(t, Config{Resolver: mem, OnEvent: clientLog.record})
	l, err := server.Listen(testCtx(t), "move.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "move.demo")

	const total, rebinds = 16 << 20, 8
	progress, done := spread(total, rebinds, func(i int) {
		require.NoError(t, client.Rebind(testCtx(t), loopbackAddr(i)))
	})
	transfer(t, c, sc, total, progress)
	require.Equal(t, rebinds, *done)
	// A migration whose flows await the peer races its probe against a
	// fresh handshake; on loopback the probe nearly always wins, but a
	// busy machine can let the handshake in first, and then the flow
	// resumes on the new connection (EventReplaced).
	migrated, replaced := clientLog.count(EventMigrated), clientLog.count(EventReplaced)
	require.Equal(t, rebinds, migrated+replaced, "every rebind migrates the connection or replaces it")
	require.Greater(t, migrated, rebinds/2, "mostly by migration")
	require.Zero(t, clientLog.count(EventLost))
	require.LessOrEqual(t, clientLog.count(EventSuspended), replaced, "a migrated flow never loses its carrier")
	require.Equal(t, client.LocalAddr(), sc.RemoteAddr().(Addr).Endpoint, "the server sees the client's new address")

	// Old sockets close once the connection no longer needs them; here the
	// connection lives on, so they stay until it ends.
	c.Close()
	sc.Close()
	client.mu.Lock()
	retired := len(client.retired)
	client.mu.Unlock()
	require.LessOrEqual(t, retired, rebinds)
}

func TestRebindServerFlowsResume(t *testing.T) {
	var serverLog, clientLog eventLog
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, OnEvent: serverLog.record})
	client := newHost(t, Config{Resolver: mem, OnEvent: clientLog.record})
	l, err := server.Listen(testCtx(t), "provider.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "provider.demo")

	const total, rebinds = 16 << 20, 5
	progress, done := spread(total, rebinds, func(i int) {
		require.NoError(t, server.Rebind(testCtx(t), loopbackAddr(i)))
	})
	transfer(t, c, sc, total, progress)
	require.Equal(t, rebinds, *done)
	// A rebind while the flow is still resuming from the previous one
	// merges into that resume, so resumes may be fewer than rebinds.
	require.NotZero(t, c.Stats().Resumes, "a moved server's flows resume at its new address")
	require.Zero(t, clientLog.count(EventLost))
	require.Equal(t, server.LocalAddr(), c.RemoteAddr().(Addr).Endpoint)
	eps, err := mem.Resolve(context.Background(), "provider.demo")
	require.NoError(t, err)
	require.Equal(t, []resolve.Endpoint{{Addr: server.LocalAddr(), Key: server.Key()}}, eps,
		"the registration follows the server, and the old one is withdrawn")
}

func TestRebindErrors(t *testing.T) {
	h := newHost(t, Config{Resolver: resolve.NewMemory()})
	require.Error(t, h.Rebind(testCtx(t), "not an address"))
	require.NoError(t, h.Close())
	require.ErrorIs(t, h.Rebind(testCtx(t), "127.0.0.1:0"), net.ErrClosed)
}
