package sal

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/mobility/emu"
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
// quic-go then never sends the new path's probe, and the migration must
// give up on it and resume the flows instead of waiting 4 s.
func TestMigrationAbandonsStuckProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, natStormLink, Config{})
		const outage = 300 * time.Millisecond
		handedOver := false
		start := time.Now()
		transfer(t, b.c, b.sc, 8<<20, func(sent int) {
			if sent >= 4<<20 && !handedOver {
				handedOver = true
				b.path.Handover(outage)
				time.AfterFunc(outage, func() { b.moveClient(t) })
			}
		})
		took := time.Since(start)
		require.True(t, handedOver)
		st := b.c.Stats()
		// Calm, the transfer takes 4.4 s, and 4.7 s with the outage when
		// the flows resume; 6.1 s when the migration waits for its probe.
		t.Logf("took %v; resumes %d, migrations %d", took, st.Resumes, b.clientLog.count(EventMigrated))
		b.requireNoLoss(t)
		require.Less(t, took, 5500*time.Millisecond)
	})
}
