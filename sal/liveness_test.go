package sal

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// natStormLink is the bench's nat-rebind path: 20 ms RTT, 20 Mbit/s.
var natStormLink = emu.LinkConfig{Delay: 10 * time.Millisecond, Rate: 20e6}

// natStorm transfers n bytes each way while the NAT in front of the client
// forgets its mappings every 60 ms, 50 times, from 0.5 s on; it returns
// how long the transfer took in virtual time.
func natStorm(t *testing.T, b *bed, n int) time.Duration {
	start := time.Now()
	for i := range 50 {
		timer := time.AfterFunc(500*time.Millisecond+time.Duration(i)*60*time.Millisecond, b.path.Rebind)
		t.Cleanup(func() { timer.Stop() })
	}
	transfer(t, b.c, b.sc, n, nil)
	return time.Since(start)
}

// quic-go's server validates at most three new paths per 5 s and keeps
// answering the last address it switched to, so after a burst of NAT
// rebindings it can talk to a mapping that no longer exists, while the
// client's packets still reach it: the connection hears nothing until its
// 30 s idle timeout. The silence check replaces such a connection once a
// fresh handshake gets through, and the flows resume on it.
func TestNATStormResumesBeforeIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, natStormLink, Config{})
		took := natStorm(t, b, 8<<20)
		// Calm, the transfer takes 4.4 s; waiting for the idle timeout, 34 s.
		t.Logf("8 MiB each way through 50 rebindings in 3 s: %v", took)
		require.Less(t, took, 12*time.Second, "the flows did not wait for the idle timeout")
		require.NotZero(t, b.clientLog.count(EventReplaced))
		b.requireNoLoss(t)
	})
}

// A NAT rebinding tells the client nothing: once quic-go's server answers a
// mapping that no longer exists, the client notices only by the silence,
// and it must notice within a few PTOs of its path, not a fixed second.
// Through the storm each connection lives three rebindings and is
// replaced about 0.2 s after it falls silent (three PTOs of a 20 ms
// path), seven times; with the fixed second it was replaced twice, each
// after 1 s of silence.
func TestNATRebindingNoticedWithinPTOs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, natStormLink, Config{})
		natStorm(t, b, 8<<20)
		b.requireNoLoss(t)
		b.clientLog.mu.Lock()
		var silences []time.Duration
		for _, e := range b.clientLog.events {
			if e.Kind == EventReplaced {
				silences = append(silences, e.Stall)
			}
		}
		b.clientLog.mu.Unlock()
		t.Logf("replaced after %v of silence", silences)
		require.GreaterOrEqual(t, len(silences), 3)
		for _, s := range silences {
			// Three PTOs here are 150-200 ms (the storm's queueing widens
			// the RTT's deviation), plus up to a quarter for the look.
			require.Less(t, s, 400*time.Millisecond, "noticed the dead mapping late")
		}
	})
}

// A false alarm costs a handshake, nothing more: the path's RTT jumps from
// 20 ms to 1.2 s mid-transfer, so the old connection hears nothing for
// far more than three of its PTOs, and the silence check dials afresh;
// the old connection is heard again before the fresh handshake completes
// (the same slow round trip, begun later), so it stays, and the flow
// goes on without a suspension.
func TestSilenceFalseAlarmKeepsConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, natStormLink, Config{})
		var initials atomic.Int32 // QUIC Initials from the client: handshakes begun
		b.path.SetHook(func(p emu.Packet) emu.Verdict {
			if p.Dir == emu.Up && len(p.Data) > 0 && p.Data[0]&0xf0 == 0xc0 {
				initials.Add(1)
			}
			return emu.Verdict{}
		})
		slowed := false
		transfer(t, b.c, b.sc, 4<<20, func(sent int) {
			if sent >= 1<<20 && !slowed {
				slowed = true
				slow := emu.LinkConfig{Delay: 600 * time.Millisecond, Rate: natStormLink.Rate}
				b.path.Configure(emu.Up, slow)
				b.path.Configure(emu.Down, slow)
			}
		})
		b.requireNoLoss(t)
		require.Positive(t, initials.Load(), "the silence check dialed afresh")
		require.Zero(t, b.clientLog.count(EventReplaced), "the old connection was heard again first")
		require.Zero(t, b.clientLog.count(EventSuspended))
	})
}

// An explicit Config.SilenceTimeout still sets the least silence that
// counts; by default three PTOs count, at least 100 ms.
func TestSilenceLimit(t *testing.T) {
	st := func(srtt, dev time.Duration) quic.ConnectionStats {
		return quic.ConnectionStats{SmoothedRTT: srtt, MeanDeviation: dev}
	}
	loopback, cell := st(100*time.Microsecond, 50*time.Microsecond), st(150*time.Millisecond, 20*time.Millisecond)
	def := &Host{}
	require.Equal(t, 100*time.Millisecond, def.silenceLimit(loopback), "the floor")
	require.Equal(t, 50*time.Millisecond, def.silenceLook(loopback))
	require.Equal(t, 3*(150+80+25)*time.Millisecond, def.silenceLimit(cell), "three PTOs")
	require.Equal(t, 3*(150+80+25)*time.Millisecond/4, def.silenceLook(cell))
	fixed := &Host{cfg: Config{SilenceTimeout: time.Second}}
	require.Equal(t, time.Second, fixed.silenceLimit(loopback))
	require.Equal(t, 250*time.Millisecond, fixed.silenceLook(loopback))
	require.Equal(t, time.Duration(0), (&Config{SilenceTimeout: -1}).silenceTimeout(), "off")
}

// silence counts only packets sent after the acknowledgements of the last
// packet heard: a receiver that just acknowledged the end of a download is
// not waiting for anything.
func TestSilenceObserve(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	stats := func(sent, heard uint64) quic.ConnectionStats {
		return quic.ConnectionStats{PacketsSent: sent, PacketsReceived: heard}
	}
	const look = 250 * time.Millisecond
	s := silence{heard: 10, lastLook: t0}
	require.Zero(t, s.observe(stats(5, 11), at(250), look), "heard something")
	require.Zero(t, s.observe(stats(6, 11), at(500), look), "the ack of what was heard")
	require.Zero(t, s.observe(stats(6, 11), at(750), look), "nothing sent, nothing owed")
	require.Equal(t, 250*time.Millisecond, s.observe(stats(7, 11), at(1000), look), "sent since the last look")
	require.Equal(t, 750*time.Millisecond, s.observe(stats(9, 11), at(1500), look))
	require.Zero(t, s.observe(stats(9, 12), at(1750), look), "answered")
	require.Zero(t, s.observe(stats(10, 12), at(2000), look))
	require.Zero(t, s.observe(stats(10, 12), at(2250), look))
	// A late look (the process was descheduled for 2 s) counts one look
	// interval back, not the whole gap.
	require.Equal(t, look, s.observe(stats(11, 12), at(4250), look))
}

// A migration abandons its path probe after a PTO without a packet,
// within a floor and a ceiling.
func TestProbeSilence(t *testing.T) {
	h := &Host{}
	for _, tt := range []struct {
		srtt, dev, want time.Duration
	}{
		{75 * time.Millisecond, 30 * time.Millisecond, (75 + 120 + 25) * time.Millisecond},
		{time.Millisecond, 0, 150 * time.Millisecond},               // loopback: the floor
		{3 * time.Second, time.Second, 2 * h.cfg.endpointTimeout()}, // a terrible path: the ceiling
	} {
		got := h.probeSilence(quic.ConnectionStats{SmoothedRTT: tt.srtt, MeanDeviation: tt.dev})
		require.Equal(t, tt.want, got, "srtt %v, deviation %v", tt.srtt, tt.dev)
	}
}

// An idle connection hears nothing on its old path, which works: its
// migration waits for the probe's answer over a new path much slower than
// the old one, rather than give up and reconnect.
func TestIdleMigrationWaitsForSlowPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, calm, Config{})
		echo(t, b.c, b.sc, "before")
		time.Sleep(time.Second) // quiet: every acknowledgement is in

		// The client moves to a path with a 300 ms RTT (it had 20 ms).
		slow := emu.LinkConfig{Delay: 150 * time.Millisecond}
		b.path.Configure(emu.Up, slow)
		b.path.Configure(emu.Down, slow)
		b.moveClient(t)
		require.Equal(t, 1, b.clientLog.count(EventMigrated), "migrated, not reconnected")
		require.Zero(t, b.clientLog.count(EventSuspended))
		echo(t, b.c, b.sc, "after")
	})
}

// A handover kills the old path while the sender's congestion window is
// full, and the client learns its new address only when the outage ends:
// quic-go then never sends the new path's probe. The migration races the
// probe against a fresh handshake started at once, so the flow moves after
// the outage plus a handshake and a resume (two round trips), not after a
// silent PTO more, nor after the probe's ceiling (2×EndpointTimeout).
func TestMigrationRacesStuckProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, natStormLink, Config{})
		const outage = 300 * time.Millisecond
		var handedOver time.Time
		start := time.Now()
		transfer(t, b.c, b.sc, 8<<20, func(sent int) {
			if sent >= 4<<20 && handedOver.IsZero() {
				handedOver = time.Now()
				b.handover(outage)
				time.AfterFunc(outage, func() { b.moveClient(t) })
			}
		})
		took := time.Since(start)
		require.False(t, handedOver.IsZero())
		b.requireNoLoss(t)
		moved, ok := b.clientLog.firstAfter(handedOver, EventResumed, EventMigrated)
		require.True(t, ok, "the flow moved to the new address")
		// Waiting for the probe, the flow moved 1.28 s after the handover
		// began; giving the probe up after a silent PTO (150 ms floor) and
		// then dialing, 0.49 s; racing it, 0.34 s: the outage, a handshake
		// and a resume. The transfer's total (4.4 s calm) depends on how
		// the new connection's slow start meets the 20 Mbit/s queue, which
		// depends on the order in which goroutines run: no measure of the
		// migration.
		stall := moved.Sub(handedOver)
		t.Logf("flow moved %v after the handover began; transfer took %v; resumes %d, migrations %d, replaced %d",
			stall, took, b.c.Stats().Resumes, b.clientLog.count(EventMigrated), b.clientLog.count(EventReplaced))
		rtt := 2 * natStormLink.Delay
		require.Less(t, stall-outage, 4*rtt, "the fresh handshake did not start at once")
		require.Equal(t, 1, b.clientLog.count(EventReplaced), "the fresh connection took the old one's place")
		require.Zero(t, b.clientLog.count(EventMigrated), "the stuck probe lost the race")
	})
}

// handover makes a handover with the given outage in which the client's
// old address goes away for good, as a device's does when it changes
// cell: Path.Handover alone leaves the old socket able to send through a
// new mapping.
func (b *bed) handover(outage time.Duration) {
	if b.dead == nil {
		b.dead = &emu.DeadAddrs{}
		b.path.SetHook(b.dead.Hook)
	}
	old := b.client.LocalAddr()
	mapped, _ := b.path.Mapping(old)
	b.dead.Kill(old, mapped)
	b.path.Handover(outage)
}

// Many quiet flows on one connection go through a handover that leaves the
// probe stuck (the outage filled the window): one race moves them all, one
// fresh handshake, and every flow resumes on the new connection within a
// few round trips of the outage's end, every byte in order.
func TestQuietFlowsShareOneRace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The bench's flows scenario: 20 ms RTT, 100 Mbit/s.
		link := emu.LinkConfig{Delay: 10 * time.Millisecond, Rate: 100e6}
		b := newBed(t, link, Config{})
		l, err := b.server.Listen(t.Context(), "quiet.demo")
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		// 1 KiB every 50 ms each, for 2 s: 32 Mbit/s in all, enough to fill
		// the window during the outage (the bench's 1,000 flows of 256 B
		// each fill it in some runs, not in others).
		const flows, msg, msgs = 200, 1024, 40
		const outage = 100 * time.Millisecond
		conns := make([]*Conn, flows)
		read := make(chan error, flows)
		for i := range conns {
			var sc *Conn
			conns[i], sc = openPair(t, b.client, l, "quiet.demo")
			go func() { read <- readQuiet(sc, i, msgs, msg) }()
		}
		var handedOver time.Time
		time.AfterFunc(time.Second, func() {
			handedOver = time.Now()
			b.handover(outage)
			time.AfterFunc(outage, func() { b.moveClient(t) })
		})
		errs := make(chan error, flows)
		for i, c := range conns {
			go func() {
				for j := range msgs {
					if _, err := c.Write(quietMessage(i, j, msg)); err != nil {
						errs <- err
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				errs <- c.CloseWrite()
			}()
		}
		for range flows {
			require.NoError(t, <-errs)
			require.NoError(t, <-read)
		}
		require.False(t, handedOver.IsZero())
		b.requireNoLoss(t)
		b.clientLog.mu.Lock()
		last := handedOver
		for i, e := range b.clientLog.events {
			if e.Kind == EventResumed && b.clientLog.at[i].After(last) {
				last = b.clientLog.at[i]
			}
		}
		b.clientLog.mu.Unlock()
		t.Logf("replaced %d, migrated %d, resumed %d; the last flow resumed %v after the handover began",
			b.clientLog.count(EventReplaced), b.clientLog.count(EventMigrated), b.clientLog.count(EventResumed),
			last.Sub(handedOver))
		require.Equal(t, flows+1, b.clientLog.count(EventResumed), "every flow resumed, the bed's own too")
		// Giving the probe up after a silent PTO (150 ms floor) and then
		// dialing, the last flow resumed 0.33 s after the handover began;
		// racing the probe, 0.17 s: the outage, a handshake and the resumes.
		require.Less(t, last.Sub(handedOver)-outage, 5*2*link.Delay, "the fresh handshake did not start at once")
		require.Equal(t, 1, b.clientLog.count(EventReplaced), "one race for the connection, not one per flow")
		require.Zero(t, b.clientLog.count(EventMigrated), "the stuck probe lost the race")
	})
}

// quietMessage is message j of flow i: it starts with both, and every
// further byte is derived from them, so a byte lost, duplicated or
// misplaced shows.
func quietMessage(i, j, n int) []byte {
	p := make([]byte, n)
	binary.BigEndian.PutUint16(p, uint16(i))
	binary.BigEndian.PutUint16(p[2:], uint16(j))
	for k := 4; k < n; k++ {
		p[k] = byte(i*31 + j*7 + k)
	}
	return p
}

// readQuiet reads flow i's msgs quietMessages of n bytes from sc, then
// its end, and reports what went wrong, if anything.
func readQuiet(sc *Conn, i, msgs, n int) error {
	got := make([]byte, n)
	for j := range msgs {
		if _, err := io.ReadFull(sc, got); err != nil {
			return fmt.Errorf("flow %d, message %d: %w", i, j, err)
		}
		if !bytes.Equal(got, quietMessage(i, j, n)) {
			return fmt.Errorf("flow %d: message %d is wrong", i, j)
		}
	}
	if _, err := sc.Read(got); err != io.EOF {
		return fmt.Errorf("flow %d: after its end: %v", i, err)
	}
	return nil
}

// A server loses its socket without a word (a crash of its network stack,
// a container moved), another Host takes its address, and the server
// comes back elsewhere. The client reaches the service by a fixed table
// rule, so no watch tells it: its connection hears nothing, and a fresh
// handshake at the old address is refused by the newcomer. That refusal
// says the peer has left, so the flow resumes at once where the table now
// points, instead of after the 30 s idle timeout, and no byte is lost.
func TestSilentPeerWhoseAddressAnotherHostTook(t *testing.T) {
	for _, sameName := range []bool{false, true} {
		name := map[bool]string{false: "Refuses", true: "OtherKey"}[sameName]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				testAddressTaken(t, sameName)
			})
		})
	}
}

func testAddressTaken(t *testing.T, sameName bool) {
	nw := emu.NewNetwork(1)
	t.Cleanup(func() { nw.Close() })
	var serverSock net.PacketConn
	serverListen := func(ctx context.Context, network, address string) (net.PacketConn, error) {
		pc, err := nw.ListenPacket(ctx, network, address)
		if serverSock == nil {
			serverSock = pc
		}
		return pc, err
	}
	var clientLog eventLog
	server := newHost(t, Config{Resolver: resolve.NewMemory(), ListenAddr: "10.0.0.1:443", ListenPacket: serverListen})
	client := newHost(t, Config{Resolver: resolve.NewMemory(), ListenAddr: "10.0.1.1:0", ListenPacket: nw.ListenPacket, OnEvent: clientLog.record})
	const svc = "taken.demo"
	at := func(addr string) {
		require.NoError(t, client.Table().Set(Rule{Service: svc, Action: ActionEndpoints,
			Endpoints: []resolve.Endpoint{{Addr: netip.MustParseAddrPort(addr)}}}))
	}
	at("10.0.0.1:443")
	l, err := server.Listen(t.Context(), svc)
	require.NoError(t, err)
	c, sc := openPair(t, client, l, svc)
	echo(t, c, sc, "before")

	start := time.Now()
	require.NoError(t, serverSock.Close())
	newcomer := newHost(t, Config{Resolver: resolve.NewMemory(), ListenAddr: "10.0.0.1:443", ListenPacket: nw.ListenPacket})
	// The newcomer serves the same name under another key, or another
	// service only, and so refuses this one in the handshake.
	nl, err := newcomer.Listen(t.Context(), map[bool]string{true: svc, false: "other.demo"}[sameName])
	require.NoError(t, err)
	t.Cleanup(func() { nl.Close() })
	require.NoError(t, server.Rebind(t.Context(), "10.0.0.2:443"))
	at("10.0.0.2:443")

	echo(t, c, sc, "after the server left its address")
	took := time.Since(start)
	t.Logf("the flow carried on after %v", took)
	require.Less(t, took, 10*time.Second, "the flow waited for the idle timeout")
	require.Zero(t, clientLog.count(EventReplaced), "the newcomer took nothing over")
	require.Positive(t, clientLog.count(EventResumed))
	transfer(t, c, sc, 1<<20, nil)
}
