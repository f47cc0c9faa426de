package mobility

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeOS is an injected ReadState: tests set the State it returns and
// count the reads.
type fakeOS struct {
	mu    sync.Mutex
	s     State
	err   error
	reads int
}

func (f *fakeOS) read() (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.s, f.err
}

func (f *fakeOS) set(s State, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s, f.err = s, err
}

func (f *fakeOS) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// fakeSource is an injected event source: each send on events is one OS
// event; a send on fail kills it.
type fakeSource struct {
	events chan struct{}
	fail   chan error
	done   chan struct{}
	once   sync.Once
}

func newFakeSource() *fakeSource {
	return &fakeSource{events: make(chan struct{}), fail: make(chan error), done: make(chan struct{})}
}

func (s *fakeSource) run(trigger func()) error {
	for {
		select {
		case <-s.events:
			trigger()
		case err := <-s.fail:
			return err
		case <-s.done:
			return nil
		}
	}
}

func (s *fakeSource) close() error { s.once.Do(func() { close(s.done) }); return nil }

var (
	wifiA = ifc(3, "wlan0", KindWiFi, "192.168.1.20/24")
	wifiB = ifc(3, "wlan0", KindWiFi, "10.9.0.20/24") // another access point
	cellA = ifc(4, "wwan0", KindCellular, "100.70.1.2/10")
	loA   = ifc(1, "lo", KindLoopback, "127.0.0.1/8")
)

// startFake starts a Monitor over f and, if src is not nil, that event
// source; otherwise it polls.
func startFake(t *testing.T, f *fakeOS, src *fakeSource, cfg MonitorConfig) *Monitor {
	t.Helper()
	cfg.ReadState = f.read
	cfg.DisableNetlink = src == nil
	m, err := newMonitor(cfg, func() (eventSource, error) { return src, nil })
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m
}

// recv returns the pending Change, failing if there is none.
func recv(t *testing.T, ch <-chan Change) Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		require.True(t, ok, "subscription closed")
		return c
	default:
		t.Fatal("no Change")
		return Change{}
	}
}

func requireNone(t *testing.T, ch <-chan Change) {
	t.Helper()
	select {
	case c := <-ch:
		t.Fatalf("unexpected Change: %+v", c)
	default:
	}
}

func TestMonitorPolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeOS{s: state(loA, wifiA)}
		m := startFake(t, f, nil, MonitorConfig{PollInterval: time.Second})
		require.Equal(t, netip.MustParseAddr("192.168.1.20"), m.Preferred())
		ch := m.Subscribe(t.Context())

		// Polls that find nothing new publish nothing.
		time.Sleep(5500 * time.Millisecond)
		synctest.Wait()
		requireNone(t, ch)
		require.Equal(t, 1+5, f.count())

		f.set(state(loA, wifiB), nil)
		time.Sleep(time.Second)
		synctest.Wait()
		c := recv(t, ch)
		require.True(t, c.PreferredChanged)
		require.Equal(t, netip.MustParseAddr("10.9.0.20"), c.Preferred)
		require.Equal(t, netip.MustParseAddr("192.168.1.20"), c.OldPreferred)
		require.Equal(t, addrs("192.168.1.20"), c.Removed)
		require.Equal(t, addrs("10.9.0.20"), c.Added)
		require.True(t, c.Old.Equal(state(loA, wifiA)))
		require.True(t, c.New.Equal(m.State()))
		require.Equal(t, time.Now().Truncate(time.Second), c.Time, "read at the poll tick")

		// Once per difference: the same State again is silent.
		time.Sleep(3 * time.Second)
		synctest.Wait()
		requireNone(t, ch)
	})
}

func TestMonitorDebounce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeOS{s: state(wifiA)}
		src := newFakeSource()
		m := startFake(t, f, src, MonitorConfig{Debounce: 10 * time.Millisecond})
		ch := m.Subscribe(t.Context())

		// A burst of events around two changes costs one read and makes
		// one Change, from the first State to the last.
		start := time.Now()
		src.events <- struct{}{}
		f.set(state(wifiA, cellA), nil)
		time.Sleep(2 * time.Millisecond)
		src.events <- struct{}{}
		f.set(state(cellA), nil)
		src.events <- struct{}{}
		time.Sleep(5 * time.Millisecond)
		src.events <- struct{}{}
		synctest.Wait()
		require.Equal(t, 1, f.count(), "read before the debounce ran out")
		time.Sleep(3 * time.Millisecond) // 10 ms after the first event
		synctest.Wait()
		require.Equal(t, 2, f.count())
		c := recv(t, ch)
		require.Equal(t, 10*time.Millisecond, c.Time.Sub(start), "debounce is not pushed back by later events")
		require.True(t, c.Old.Equal(state(wifiA)))
		require.True(t, c.New.Equal(state(cellA)))
		require.True(t, c.PreferredChanged)
		require.Equal(t, addrs("192.168.1.20"), c.Removed)

		// An event that changes nothing costs a read and publishes nothing.
		src.events <- struct{}{}
		time.Sleep(time.Second)
		synctest.Wait()
		require.Equal(t, 3, f.count())
		requireNone(t, ch)

		// With events, there is no polling.
		time.Sleep(time.Minute)
		synctest.Wait()
		require.Equal(t, 3, f.count())
	})
}

func TestMonitorPoke(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeOS{s: state(wifiA)}
		m := startFake(t, f, newFakeSource(), MonitorConfig{Debounce: time.Hour})
		ch := m.Subscribe(t.Context())
		f.set(state(wifiB), nil)
		start := time.Now()
		m.Poke()
		synctest.Wait()
		c := recv(t, ch)
		require.Equal(t, start, c.Time, "Poke reads at once, without the debounce")
		require.Equal(t, netip.MustParseAddr("10.9.0.20"), m.Preferred())
		m.Poke()
		synctest.Wait()
		requireNone(t, ch)
		require.Equal(t, 3, f.count())
	})
}

func TestMonitorPreferredChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeOS{s: state(loA, wifiA, cellA)}
		m := startFake(t, f, nil, MonitorConfig{})
		ch := m.Subscribe(t.Context())
		step := func(s State) Change {
			t.Helper()
			f.set(s, nil)
			m.Poke()
			synctest.Wait()
			return recv(t, ch)
		}

		// A cellular address change does not move a wifi pick, though it
		// is reported.
		c := step(state(loA, wifiA, ifc(4, "wwan0", KindCellular, "100.70.1.3/10")))
		require.False(t, c.PreferredChanged)
		require.Equal(t, netip.MustParseAddr("192.168.1.20"), c.Preferred)
		require.Equal(t, addrs("100.70.1.2"), c.Removed)
		require.Equal(t, addrs("100.70.1.3"), c.Added)
		c = step(state(loA, wifiA, cellA))
		require.False(t, c.PreferredChanged)

		// A second wifi address that only ties does not move it either.
		c = step(state(loA, ifc(3, "wlan0", KindWiFi, "192.168.1.20/24", "192.168.1.5/24"), cellA))
		require.False(t, c.PreferredChanged)
		require.Equal(t, netip.MustParseAddr("192.168.1.20"), c.Preferred)
		require.Equal(t, addrs("192.168.1.5"), c.Added)

		// Wifi down: move to cellular; its address counts as removed.
		c = step(state(loA, down(ifc(3, "wlan0", KindWiFi, "192.168.1.20/24", "192.168.1.5/24")), cellA))
		require.True(t, c.PreferredChanged)
		require.Equal(t, netip.MustParseAddr("100.70.1.2"), c.Preferred)
		require.ElementsMatch(t, addrs("192.168.1.20", "192.168.1.5"), c.Removed)

		// Nothing left: zero Preferred, still a change.
		c = step(state(loA))
		require.True(t, c.PreferredChanged)
		require.False(t, c.Preferred.IsValid())
		require.False(t, m.Preferred().IsValid())

		// A flag-only change (an interface without addresses goes up)
		// is a Change, with nothing to rebind.
		c = step(state(loA, Interface{Name: "eth0", Index: 2, Kind: KindWired, Up: true}))
		require.False(t, c.PreferredChanged)
		require.Empty(t, c.Removed)
		require.Empty(t, c.Added)
	})
}

func TestMonitorSubscribers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeOS{s: state(wifiA)}
		m := startFake(t, f, nil, MonitorConfig{})
		ctx, cancel := context.WithCancel(t.Context())
		a, b, short := m.Subscribe(t.Context()), m.Subscribe(t.Context()), m.Subscribe(ctx)

		f.set(state(wifiA, cellA), nil)
		m.Poke()
		synctest.Wait()
		for _, ch := range []<-chan Change{a, b, short} {
			require.Equal(t, addrs("100.70.1.2"), recv(t, ch).Added)
		}

		// Ending a subscription's context closes it; the others go on.
		cancel()
		synctest.Wait()
		_, ok := <-short
		require.False(t, ok)

		// b takes each Change; a falls behind and gets one merged Change.
		f.set(state(cellA), nil)
		m.Poke()
		synctest.Wait()
		c1 := recv(t, b)
		f.set(state(wifiB, cellA), nil)
		m.Poke()
		synctest.Wait()
		c2 := recv(t, b)
		require.True(t, c1.PreferredChanged)
		require.True(t, c2.PreferredChanged)

		merged := recv(t, a)
		requireNone(t, a)
		require.True(t, merged.Old.Equal(state(wifiA, cellA)))
		require.True(t, merged.New.Equal(state(wifiB, cellA)))
		require.Equal(t, netip.MustParseAddr("192.168.1.20"), merged.OldPreferred)
		require.Equal(t, netip.MustParseAddr("10.9.0.20"), merged.Preferred)
		require.True(t, merged.PreferredChanged)
		require.Equal(t, addrs("192.168.1.20"), merged.Removed)
		require.Equal(t, addrs("10.9.0.20"), merged.Added)
		require.Equal(t, c2.Time, merged.Time)

		// A change and its reversal, both missed, merge to no rebind.
		f.set(state(cellA), nil)
		m.Poke()
		synctest.Wait()
		f.set(state(wifiB, cellA), nil)
		m.Poke()
		synctest.Wait()
		merged = recv(t, a)
		require.False(t, merged.PreferredChanged)
		require.Empty(t, merged.Removed)
		require.Empty(t, merged.Added)

		// A context that is already done gets a closed channel.
		_, ok = <-m.Subscribe(ctx)
		require.False(t, ok)
	})
}

func TestMonitorClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeOS{s: state(wifiA)}
		src := newFakeSource()
		m, err := newMonitor(MonitorConfig{ReadState: f.read}, func() (eventSource, error) { return src, nil })
		require.NoError(t, err)
		ch := m.Subscribe(context.Background())
		require.NoError(t, m.Close())
		require.NoError(t, m.Close(), "Close is idempotent")
		_, ok := <-ch
		require.False(t, ok, "Close closes subscriptions")
		_, ok = <-m.Subscribe(context.Background())
		require.False(t, ok, "Subscribe after Close")
		select {
		case <-src.done:
		default:
			t.Fatal("Close did not close the event source")
		}
		m.Poke() // does nothing, does not block
		f.set(state(wifiB), nil)
		time.Sleep(time.Hour)
		synctest.Wait()
		require.Equal(t, 1, f.count(), "read after Close")
		require.True(t, m.State().Equal(state(wifiA)))
	})
}

func TestMonitorSourceFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeOS{s: state(wifiA)}
		src := newFakeSource()
		m := startFake(t, f, src, MonitorConfig{PollInterval: time.Second})
		ch := m.Subscribe(t.Context())
		f.set(state(wifiB), nil)
		src.fail <- errors.New("netlink: boom")
		synctest.Wait()
		// The failure itself prompts a read: events may have been lost.
		require.True(t, recv(t, ch).PreferredChanged)
		f.set(state(wifiA), nil)
		time.Sleep(time.Second)
		synctest.Wait()
		require.True(t, recv(t, ch).PreferredChanged, "no polling after the source failed")
	})
}

func TestMonitorReadErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeOS{s: state(wifiA)}
		src := newFakeSource()
		m := startFake(t, f, src, MonitorConfig{PollInterval: time.Second})
		ch := m.Subscribe(t.Context())

		f.set(State{}, errors.New("transient"))
		src.events <- struct{}{}
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		requireNone(t, ch)
		require.True(t, m.State().Equal(state(wifiA)), "a failed read keeps the last State")

		// With no further event, the Monitor retries after PollInterval.
		f.set(state(wifiB), nil)
		time.Sleep(time.Second)
		synctest.Wait()
		require.True(t, recv(t, ch).New.Equal(state(wifiB)))
	})
}

// TestMonitorCopiesState checks that a ReadState reusing its slices cannot
// change States the Monitor has handed out.
func TestMonitorCopiesState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := state(ifc(3, "wlan0", KindWiFi, "192.168.1.20/24"))
		f := &fakeOS{s: s}
		m := startFake(t, f, nil, MonitorConfig{})
		s.Interfaces[0].Addrs[0] = netip.MustParsePrefix("10.9.0.20/24")
		require.True(t, m.State().Equal(state(wifiA)))
	})
}

func TestNewMonitorErrors(t *testing.T) {
	bad := []MonitorConfig{
		{Debounce: -1},
		{PollInterval: -time.Second},
		{Policy: Policy{Family: 5}},
		{ReadState: func() (State, error) { return State{}, errors.New("no interfaces") }},
	}
	for _, cfg := range bad {
		cfg.DisableNetlink = true
		m, err := NewMonitor(cfg)
		require.Error(t, err)
		require.Nil(t, m)
	}

	// A failed first read also closes the event source it opened.
	src := newFakeSource()
	_, err := newMonitor(MonitorConfig{ReadState: func() (State, error) { return State{}, errors.New("x") }},
		func() (eventSource, error) { return src, nil })
	require.ErrorContains(t, err, "mobility: reading interfaces: x")
	<-src.done
}

// TestMonitorPolicyIsCopied checks that the Monitor keeps its own copy of
// Policy.Prefer.
func TestMonitorPolicyIsCopied(t *testing.T) {
	prefer := []Kind{KindWiFi, KindCellular}
	f := &fakeOS{s: state(cellA)}
	m := startFake(t, f, nil, MonitorConfig{Policy: Policy{Prefer: prefer}})
	require.Equal(t, netip.MustParseAddr("100.70.1.2"), m.Preferred())
	prefer[0], prefer[1] = KindCellular, KindWiFi
	// Wi-Fi comes up. The Monitor's own Policy prefers it; had it kept
	// the caller's slice, cellular would stay preferred. The expected
	// address differs from the one before, so the check cannot pass on
	// a state the Monitor has not re-read yet.
	f.set(state(wifiA, cellA, loA), nil)
	m.Poke()
	require.Eventually(t, func() bool { return m.Preferred() == netip.MustParseAddr("192.168.1.20") },
		2*time.Second, time.Millisecond, "the Monitor's own Policy prefers Wi-Fi")
}
