package emu

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// bed is a client and a server on an in-memory network, with a path
// between them whose events it records.
type bed struct {
	nw       *Network
	srv, cli *PacketConn
	path     *Path
	mu       sync.Mutex
	events   []Event
}

func newBed(t *testing.T, seed uint64, cfg PathConfig) *bed {
	t.Helper()
	b := &bed{nw: NewNetwork(seed)}
	t.Cleanup(func() { b.nw.Close() })
	b.srv, b.cli = listen(t, b.nw, srvAddr), listen(t, b.nw, cliAddr)
	user := cfg.OnEvent
	cfg.OnEvent = func(e Event) {
		b.mu.Lock()
		b.events = append(b.events, e)
		b.mu.Unlock()
		if user != nil {
			user(e)
		}
	}
	var err error
	b.path, err = b.nw.NewPath(srvAddr, cfg)
	require.NoError(t, err)
	return b
}

func (b *bed) kinds(k EventKind) []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Event
	for _, e := range b.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

func (b *bed) send(t *testing.T, msg string) {
	t.Helper()
	_, err := b.cli.WriteToUDPAddrPort([]byte(msg), b.path.ServerAddr())
	require.NoError(t, err)
}

func TestPathDelayIsExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, 1, PathConfig{
			Up:   LinkConfig{Delay: 25 * time.Millisecond},
			Down: LinkConfig{Delay: 40 * time.Millisecond},
		})
		for i := range 100 {
			start := time.Now()
			b.send(t, "ping")
			msg, from := read(t, b.srv)
			require.Equal(t, "ping", msg)
			require.Equal(t, 25*time.Millisecond, time.Since(start), "up delay, round %d", i)
			_, err := b.srv.WriteToUDPAddrPort([]byte("pong"), from)
			require.NoError(t, err)
			msg, from = read(t, b.cli)
			require.Equal(t, "pong", msg)
			require.Equal(t, b.path.ServerAddr(), from, "replies come from the server's address as the client knows it")
			require.Equal(t, 65*time.Millisecond, time.Since(start), "round trip")
			time.Sleep(time.Duration(i) * time.Millisecond)
		}
	})
}

func TestPathHandover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, 1, PathConfig{})
		b.send(t, "a")
		_, m1 := read(t, b.srv)
		require.True(t, mappingBlock.Contains(m1.Addr()), "%v", m1)
		got, ok := b.path.Mapping(cliAddr)
		require.True(t, ok)
		require.Equal(t, m1, got)

		b.path.Handover(200 * time.Millisecond)
		b.send(t, "lost in the outage")
		_, err := b.srv.WriteToUDPAddrPort([]byte("lost too"), m1)
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond)

		b.send(t, "b")
		msg, m2 := read(t, b.srv)
		require.Equal(t, "b", msg)
		require.NotEqual(t, m1.Addr(), m2.Addr(), "a handover gives a new address")

		// The old mapping is dead; the new one carries replies.
		_, err = b.srv.WriteToUDPAddrPort([]byte("to the old"), m1)
		require.NoError(t, err)
		_, err = b.srv.WriteToUDPAddrPort([]byte("to the new"), m2)
		require.NoError(t, err)
		msg, _ = read(t, b.cli)
		require.Equal(t, "to the new", msg)

		var reasons []DropReason
		for _, e := range b.kinds(EventDrop) {
			reasons = append(reasons, e.Reason)
		}
		require.Equal(t, []DropReason{DropBlackout, DropStale, DropStale}, reasons)
		maps := b.kinds(EventMapping)
		require.Len(t, maps, 2)
		require.Equal(t, cliAddr, maps[1].Old)
		require.Equal(t, m2, maps[1].New)
		require.Len(t, b.kinds(EventHandover), 1)
	})
}

func TestPathRebind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, 1, PathConfig{})
		b.send(t, "a")
		_, m1 := read(t, b.srv)
		b.path.Rebind()
		b.send(t, "b")
		_, m2 := read(t, b.srv)
		require.Equal(t, m1.Addr(), m2.Addr())
		require.NotEqual(t, m1.Port(), m2.Port())
	})
}

func TestPathMoveServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, 1, PathConfig{Down: LinkConfig{Delay: 10 * time.Millisecond}})
		old := b.path.ServerAddr()
		b.send(t, "a")
		_, m := read(t, b.srv)
		// A reply already in flight keeps the old source.
		_, err := b.srv.WriteToUDPAddrPort([]byte("in flight"), m)
		require.NoError(t, err)

		require.NoError(t, b.path.MoveServer())
		moved := b.path.ServerAddr()
		require.NotEqual(t, old, moved)
		require.Equal(t, old.Port(), moved.Port())
		_, from := read(t, b.cli)
		require.Equal(t, old, from)

		_, err = b.cli.WriteToUDPAddrPort([]byte("to the old"), old)
		require.NoError(t, err)
		b.send(t, "to the new")
		msg, _ := read(t, b.srv)
		require.Equal(t, "to the new", msg)
		_, err = b.srv.WriteToUDPAddrPort([]byte("reply"), m)
		require.NoError(t, err)
		_, from = read(t, b.cli)
		require.Equal(t, moved, from, "replies now come from the new address")

		drops := b.kinds(EventDrop)
		require.Len(t, drops, 1)
		require.Equal(t, Up, drops[0].Dir)
		require.Equal(t, DropStale, drops[0].Reason)
		mv := b.kinds(EventServerMove)
		require.Equal(t, []Event{{Time: mv[0].Time, Kind: EventServerMove, Old: old, New: moved}}, mv)
	})
}

// stream sends a numbered datagram every interval for d, and returns the
// numbers the server received with their arrival times.
func stream(t *testing.T, b *bed, interval, d time.Duration, size int) (got map[int]time.Time, sent map[int]time.Time) {
	t.Helper()
	got, sent = map[int]time.Time{}, map[int]time.Time{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, _, err := b.srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			got[int(binary.BigEndian.Uint32(buf[:n]))] = time.Now()
		}
	}()
	msg := make([]byte, size)
	for i := 0; time.Duration(i)*interval < d; i++ {
		binary.BigEndian.PutUint32(msg, uint32(i))
		sent[i] = time.Now()
		_, err := b.cli.WriteToUDPAddrPort(msg, b.path.ServerAddr())
		require.NoError(t, err)
		time.Sleep(interval)
	}
	time.Sleep(time.Second) // let the link drain
	b.srv.Close()
	<-done
	return got, sent
}

// TestPathBlackout checks that a blackout drops everything for its length,
// including what is in flight when it begins, and nothing else.
func TestPathBlackout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const delay = 10 * time.Millisecond
		b := newBed(t, 1, PathConfig{Up: LinkConfig{Delay: delay}})
		start := time.Now()
		time.AfterFunc(time.Second, func() { b.path.Blackout(time.Second) })
		got, sent := stream(t, b, time.Millisecond, 3*time.Second, 100)
		for i, at := range sent {
			since := at.Sub(start)
			if since == time.Second-delay || since == time.Second || since == 2*time.Second {
				// The blackout's timer and the sender act at the same
				// virtual instant, in either order.
				continue
			}
			inFlightAtStart := since > time.Second-delay && since < time.Second
			inWindow := since >= time.Second && since < 2*time.Second
			arrival, ok := got[i]
			if inFlightAtStart || inWindow {
				require.False(t, ok, "datagram sent at %v got through", since)
				continue
			}
			require.True(t, ok, "datagram sent at %v was lost", since)
			require.Equal(t, delay, arrival.Sub(at))
		}
		require.InDelta(t, 3000-1000-9, len(got), 2)
	})
}

func TestPathBandwidth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rate = 10_000_000
		b := newBed(t, 1, PathConfig{Up: LinkConfig{Rate: rate, Delay: 20 * time.Millisecond}})
		start := time.Now()
		// 1200 bytes every 480 µs is 20 Mbit/s, twice the rate.
		got, _ := stream(t, b, 480*time.Microsecond, 10*time.Second, 1200)
		var last time.Time
		for _, at := range got {
			if at.After(last) {
				last = at
			}
		}
		measured := float64(len(got)*1200*8) / last.Sub(start).Seconds()
		require.InEpsilon(t, rate, measured, 0.05, "measured %.0f bit/s", measured)
		require.Positive(t, b.path.Link(Up).Stats().Dropped[DropQueue])
	})
}

func TestPathHook(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var seen []Packet
		b := newBed(t, 1, PathConfig{Hook: func(p Packet) Verdict {
			seen = append(seen, Packet{Dir: p.Dir, From: p.From, To: p.To})
			if string(p.Data) == "drop me" {
				return Verdict{Drop: true}
			}
			return Verdict{Delay: 5 * time.Millisecond}
		}})
		b.send(t, "drop me")
		start := time.Now()
		b.send(t, "keep me")
		msg, m := read(t, b.srv)
		require.Equal(t, "keep me", msg)
		require.Equal(t, 5*time.Millisecond, time.Since(start))
		_, err := b.srv.WriteToUDPAddrPort([]byte("reply"), m)
		require.NoError(t, err)
		read(t, b.cli)
		front := b.path.ServerAddr()
		require.Equal(t, []Packet{
			{Dir: Up, From: cliAddr, To: front},
			{Dir: Up, From: cliAddr, To: front},
			{Dir: Down, From: srvAddr, To: m},
		}, seen)
		b.path.SetHook(nil)
		require.Equal(t, uint64(1), b.path.Link(Up).Stats().Dropped[DropHook])
	})
}

func TestPathFiltersStrangers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, 1, PathConfig{})
		b.send(t, "a")
		_, m := read(t, b.srv)
		stranger := listen(t, b.nw, netip.MustParseAddrPort("10.6.6.6:666"))
		_, err := stranger.WriteToUDPAddrPort([]byte("knock"), m)
		require.NoError(t, err)
		require.Equal(t, DropFiltered, b.kinds(EventDrop)[0].Reason)
	})
}

// TestPathDeterministic runs the same lossy, jittery scenario twice: the
// same seed gives the same events, to the nanosecond; another seed does not.
func TestPathDeterministic(t *testing.T) {
	run := func(seed uint64) []Event {
		var events []Event
		synctest.Test(t, func(t *testing.T) {
			cfg := LinkConfig{Delay: 30 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.05,
				Burst: Burst{Enter: 0.01, Exit: 0.3}, Rate: 5_000_000}
			b := newBed(t, seed, PathConfig{Up: cfg, Down: cfg})
			// Off the sender's millisecond grid: goroutines that act at the
			// same virtual instant may run in either order.
			time.AfterFunc(700*time.Millisecond+500*time.Microsecond, func() { b.path.Handover(150 * time.Millisecond) })
			time.AfterFunc(1500*time.Millisecond+500*time.Microsecond, func() { b.path.Blackout(300 * time.Millisecond) })
			stream(t, b, time.Millisecond, 2*time.Second, 700)
			events = b.events
		})
		// Events from different goroutines at different instants may be
		// recorded in either order; order them by time.
		slices.SortStableFunc(events, func(a, b Event) int { return a.Time.Compare(b.Time) })
		return events
	}
	a := run(7)
	require.Greater(t, len(a), 1000)
	requireSameEvents(t, a, run(7))
	b := run(8)
	require.False(t, slices.Equal(a, b), "another seed, the same events")
}

// requireSameEvents reports the first difference; testify's diff of
// thousands of events takes minutes.
func requireSameEvents(t *testing.T, a, b []Event) {
	t.Helper()
	for i := range min(len(a), len(b)) {
		require.Equal(t, a[i], b[i], "event %d", i)
	}
	require.Equal(t, len(a), len(b))
}

func TestPathClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, 1, PathConfig{Up: LinkConfig{Delay: time.Second}})
		b.send(t, "never")
		require.Equal(t, 1, b.path.sched[Up].len())
		require.NoError(t, b.path.Close())
		require.NoError(t, b.path.Close())
		require.Equal(t, DropClosed, b.kinds(EventDrop)[0].Reason)
		b.send(t, "nowhere") // the address is gone; nothing happens
		time.Sleep(2 * time.Second)
		_, err := b.nw.NewPath(srvAddr, PathConfig{})
		require.NoError(t, err)
	})
}
