package emu

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roamnet/roam/mobility/trace"
	"github.com/stretchr/testify/require"
)

// TestPlayReferenceOnPath plays roam's reference trace on an in-memory
// path, in virtual time, while a client pings the server every 100 ms:
// 120 s of train ride in milliseconds.
func TestPlayReferenceOnPath(t *testing.T) {
	tr, err := trace.ParseFile("../trace/testdata/reference.trace")
	require.NoError(t, err)
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, 1, PathConfig{})
		go echo(b.srv)

		type ping struct {
			at time.Duration
			ok bool
		}
		var pings []ping
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- trace.Play(context.Background(), tr, b.path) }()
		buf := make([]byte, 100)
		// Pings are off the trace's grid of whole 100 ms, so that no
		// event and ping share an instant and race.
		time.Sleep(50 * time.Millisecond)
		for time.Since(start) < tr.Duration() {
			// The client learns the server's address anew for every ping,
			// as a roam Host would from its resolver.
			_, err := b.cli.WriteToUDPAddrPort([]byte("ping"), b.path.ServerAddr())
			require.NoError(t, err)
			require.NoError(t, b.cli.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
			_, _, err = b.cli.ReadFromUDPAddrPort(buf)
			pings = append(pings, ping{time.Since(start), err == nil})
			time.Sleep(time.Until(start.Add(50*time.Millisecond + time.Duration(len(pings))*100*time.Millisecond)))
		}
		require.NoError(t, <-done)

		require.Len(t, b.kinds(EventHandover), 7)
		require.Len(t, b.kinds(EventBlackout), 1)
		require.Len(t, b.kinds(EventServerMove), 1)
		require.Len(t, b.kinds(EventMapping), 8, "a mapping per cell")
		var lost []time.Duration
		for _, p := range pings {
			if !p.ok {
				lost = append(lost, p.at)
			}
		}
		// The tunnel from 60 s to 68 s loses every ping; the link's loss
		// and handover outages lose a few more.
		inTunnel := 0
		for _, at := range lost {
			if at >= 60*time.Second && at < 68*time.Second {
				inTunnel++
			}
		}
		require.Equal(t, 80, inTunnel)
		require.Less(t, len(lost), 80+60)
		cfg := b.path.Link(Up).Config()
		require.Equal(t, LinkConfig{Delay: 35 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.008, Rate: 16_000_000}, cfg,
			"the last link event holds")
	})
}

func echo(c *PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		_, _ = c.WriteToUDPAddrPort(buf[:n], from)
	}
}

// TestPlayOnRelay plays a short trace on the relay in real time and checks
// that every event reached it.
func TestPlayOnRelay(t *testing.T) {
	tr, err := trace.ParseString(`
0.00 link rtt_ms=10 loss=0
0.05 handover outage_ms=20
0.10 blackout duration_ms=30
0.15 server_move
0.20 end
`)
	require.NoError(t, err)
	var mu sync.Mutex
	var kinds []EventKind
	srv := newUDPServer(t, true)
	r := newRelay(t, RelayConfig{Server: srv.addr(), PathConfig: PathConfig{OnEvent: func(e Event) {
		mu.Lock()
		kinds = append(kinds, e.Kind)
		mu.Unlock()
	}}})
	old := r.ServerAddr()
	require.NoError(t, trace.Play(context.Background(), tr, r))
	mu.Lock()
	require.Equal(t, []EventKind{EventLink, EventLink, EventHandover, EventBlackout, EventServerMove}, kinds)
	mu.Unlock()
	require.Equal(t, 5*time.Millisecond, r.Link(Down).Config().Delay)
	require.NotEqual(t, old, r.ServerAddr())
	cli := udpClient(t)
	_, from, ok := roundTrip(t, cli, r.ServerAddr(), []byte("after the ride"))
	require.True(t, ok)
	require.Equal(t, r.ServerAddr(), from)
}

// TestTraceDeterministic plays a generated ride twice over a stream of
// datagrams: the same seed and trace give the identical sequence of
// events, drops and delays included, to the nanosecond.
func TestTraceDeterministic(t *testing.T) {
	tr := trace.Generate(trace.Model{
		Duration:     40 * time.Second,
		TunnelEvery:  trace.Range[time.Duration]{Min: 10 * time.Second, Max: 15 * time.Second},
		TunnelLength: trace.Range[time.Duration]{Min: 2 * time.Second, Max: 3 * time.Second},
	}, 5)
	run := func(seed uint64) []Event {
		var events []Event
		synctest.Test(t, func(t *testing.T) {
			b := newBed(t, seed, PathConfig{})
			go echo(b.srv)
			go func() {
				buf := make([]byte, 2048)
				for {
					if _, _, err := b.cli.ReadFromUDPAddrPort(buf); err != nil {
						return
					}
				}
			}()
			done := make(chan error, 1)
			go func() { done <- trace.Play(context.Background(), tr, b.path) }()
			// Every 5 ms, half a millisecond off the trace's grid of
			// whole milliseconds, so that no datagram and event share an
			// instant.
			time.Sleep(500 * time.Microsecond)
			msg := make([]byte, 1200)
			for range int(tr.Duration() / (5 * time.Millisecond)) {
				_, err := b.cli.WriteToUDPAddrPort(msg, b.path.ServerAddr())
				require.NoError(t, err)
				time.Sleep(5 * time.Millisecond)
			}
			require.NoError(t, <-done)
			time.Sleep(time.Second)
			b.mu.Lock()
			events = slices.Clone(b.events)
			b.mu.Unlock()
		})
		slices.SortStableFunc(events, func(a, b Event) int { return a.Time.Compare(b.Time) })
		return events
	}
	a := run(9)
	var drops, handovers int
	for _, e := range a {
		switch e.Kind {
		case EventDrop:
			drops++
		case EventHandover:
			handovers++
		}
	}
	require.Greater(t, drops, 100)
	require.GreaterOrEqual(t, handovers, 2)
	requireSameEvents(t, a, run(9))
	require.False(t, slices.Equal(a, run(10)), "another seed, the same events")
}
