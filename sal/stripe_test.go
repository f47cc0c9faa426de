package sal

import (
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/stretchr/testify/require"
)

// PathAggregate spreads one flow over both paths: over two 8 Mbit/s
// paths, 8 MiB each way take well under the time one path needs (the
// standby policy, in the same bed), every byte checked, and each path
// carries a good part of them.
func TestPathAggregateUsesEveryPath(t *testing.T) {
	link := emu.LinkConfig{Delay: 20 * time.Millisecond, Rate: 8_000_000}
	run := func(t *testing.T, policy PathPolicy) (time.Duration, []PathInfo) {
		var took time.Duration
		var infos []PathInfo
		synctest.Test(t, func(t *testing.T) {
			b := newDualBed(t, Config{PathPolicy: policy})
			for _, p := range b.mp.Paths() {
				p.Configure(emu.Up, link)
				p.Configure(emu.Down, link)
			}
			roundTrip(t, b.c, b.sc, "hello")
			b.waitPaths(t, 2)
			time.Sleep(time.Second) // the stripe joins once the path is up
			before := b.client.Paths()
			start := time.Now()
			transfer(t, b.c, b.sc, 8<<20, nil)
			took = time.Since(start)
			infos = b.client.Paths()
			for i := range infos {
				infos[i].BytesSent -= before[i].BytesSent
			}
			require.Zero(t, b.clientLog.count(EventLost))
		})
		return took, infos
	}
	one, _ := run(t, PathStandby)
	both, infos := run(t, PathAggregate)
	total := infos[0].BytesSent + infos[1].BytesSent
	t.Logf("8 MiB each way: %v on one path, %v on both (%.2fx); sent by path %d / %d bytes", one, both, float64(one)/float64(both), infos[0].BytesSent, infos[1].BytesSent)
	for i, p := range infos {
		require.Greater(t, p.BytesSent, total/4, "path %d carries a good part", i)
	}
	require.Less(t, float64(both), float64(one)/1.3, "two paths beat one by 1.3x at least")
}

// A path of an aggregated flow that goes dark moves the flow onto the
// other, and it joins again once back: 16 MiB each way through outages
// of each path in turn, every byte checked.
func TestPathAggregateOutagesLoseNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newDualBed(t, Config{PathPolicy: PathAggregate})
		roundTrip(t, b.c, b.sc, "hello")
		b.waitPaths(t, 2)
		const outages = 4
		var over time.Time
		motion(t, b.c, b.sc, outages, func(i int) {
			time.Sleep(time.Until(over))
			b.waitPaths(t, 2)
			b.mp.Paths()[i%2].Blackout(time.Second)
			over = time.Now().Add(time.Second)
		})
		require.GreaterOrEqual(t, b.clientLog.count(EventPathDown), outages)
		require.Zero(t, b.clientLog.count(EventLost))
		require.Zero(t, b.serverLog.count(EventLost))
	})
}

// aggregatedFlow is a dual bed whose flow is striped over both paths, in
// a synctest bubble: the bed, the dialer's carrier and its stripes.
func aggregatedFlow(t *testing.T) (*dualBed, *carrier, *striped) {
	t.Helper()
	b := newDualBed(t, Config{PathPolicy: PathAggregate})
	roundTrip(t, b.c, b.sc, "hello")
	b.waitPaths(t, 2)
	time.Sleep(time.Second) // the stripe joins once the path is up
	b.c.mu.Lock()
	car := b.c.car
	b.c.mu.Unlock()
	require.NotNil(t, car.striped)
	car.striped.mu.Lock()
	require.Len(t, car.striped.subs, 2, "a stream on each path")
	car.striped.mu.Unlock()
	return b, car, car.striped
}

// A further stream the listener refuses (a Stripe that names no carrier
// it holds) leaves the carrier without harm: its sender stops, nothing
// went out on it, and the flow goes on, every byte checked.
func TestStripeRefusedLeavesTheFlowAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, car, st := aggregatedFlow(t)
		st.mu.Lock()
		further := st.subs[1]
		// Set the joined stream aside, so that a second one may try
		// the same connection.
		st.subs = st.subs[:1]
		st.mu.Unlock()

		p := further.peer
		b.client.mu.Lock()
		p.holdLocked()
		b.client.mu.Unlock()
		wrong := *car
		wrong.id = car.id + 100 // no such carrier at the listener
		require.True(t, b.c.openStripe(&wrong, p))
		require.Eventually(t, func() bool { return !st.uses(p.sess) }, time.Second, 10*time.Millisecond,
			"the refused stream left")
		st.mu.Lock()
		st.subs = append(st.subs, further)
		st.mu.Unlock()
		p.sess.attach(b.c)

		transfer(t, b.c, b.sc, 2<<20, nil)
		require.Zero(t, b.clientLog.count(EventLost))
		require.Zero(t, b.serverLog.count(EventLost))
		require.Zero(t, b.clientLog.count(EventSuspended), "the refusal did not touch the carrier")
	})
}

// A further stream that loses the race to join (another stream of the
// carrier already uses its connection, as when restripe and addStripes
// both try one) is given up before its header goes out: the listener
// never holds a stream the dialer does not read and write. Before, the
// header left first, the listener joined it, and the dialer's reset then
// failed the listener's reads (a CI soak caught it).
func TestStripeRacingJoinWritesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, car, st := aggregatedFlow(t)
		st.mu.Lock()
		p := st.subs[1].peer
		st.mu.Unlock()

		b.client.mu.Lock()
		p.holdLocked()
		b.client.mu.Unlock()
		require.False(t, b.c.openStripe(car, p), "the carrier has a stream on that connection")
		b.client.releasePeer(p)
		time.Sleep(time.Second)
		b.sc.mu.Lock()
		listener := b.sc.car.striped
		b.sc.mu.Unlock()
		listener.mu.Lock()
		held := len(listener.subs)
		listener.mu.Unlock()
		require.Equal(t, 2, held, "the listener joined no third stream")

		transfer(t, b.c, b.sc, 2<<20, nil)
		require.Zero(t, b.clientLog.count(EventLost))
		require.Zero(t, b.serverLog.count(EventLost))
		require.Zero(t, b.clientLog.count(EventSuspended), "the lost race did not touch the carrier")
	})
}

// The reordering buffer delivers chunks in order whatever order they
// arrive in, drops what was already read, refuses a chunk beyond the
// window it announced and a second End elsewhere, and reads io.EOF only
// once every byte up to the End is in.
func TestStripedReorders(t *testing.T) {
	st := &striped{window: 64, changed: make(chan struct{}), chunks: make(map[uint64][]byte), rdl: new(deadline)}
	put := func(off uint64, s string) {
		t.Helper()
		require.NoError(t, st.admit(off, len(s)))
		st.arrived(off, []byte(s))
	}
	put(10, "klmnopqrst")
	put(0, "abcdefghij")
	put(5, "fghij")                     // a copy of what is there: dropped when read past
	require.NoError(t, st.admit(20, 0)) // End at 20
	var got []byte
	buf := make([]byte, 7)
	for {
		n, err := st.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	require.Equal(t, "abcdefghijklmnopqrst", string(got))

	require.ErrorIs(t, st.admit(20+64-4, 5), ErrProtocol, "beyond the window")
	require.ErrorIs(t, st.admit(30, 0), ErrProtocol, "a second End elsewhere")
	require.ErrorIs(t, st.admit(18, 4), ErrProtocol, "past the End")
}
