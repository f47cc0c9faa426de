package mobility

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// MonitorConfig configures a Monitor. Its zero value watches the operating
// system with the default Policy. NewMonitor does not modify it.
type MonitorConfig struct {
	// Policy picks the preferred address in each State.
	Policy Policy

	// Debounce is how long the Monitor waits after an OS event before it
	// re-reads the interfaces, so that the burst of events one change
	// brings (the link, then each address) costs one read and one
	// Change. If zero, 10 ms. Negative values are an error.
	Debounce time.Duration

	// PollInterval is how often the state is re-read where there are no OS
	// events: on systems other than Linux, when DisableNetlink is set,
	// and after the netlink socket fails. With netlink, it is the delay
	// before retrying a failed read. If zero, 1 s. Negative values are an
	// error.
	PollInterval time.Duration

	// Logger receives the Monitor's changes (Info) and its failures
	// (Warn). If nil, the Monitor logs nothing.
	Logger *slog.Logger

	// ReadState reads the interface state. If nil, ReadOSState. Tests
	// inject fakes here. It is called from one goroutine at a time, and
	// its result is copied, so it may reuse its slices. It must not call
	// the Monitor's Close, which waits for it.
	ReadState func() (State, error)

	// DisableNetlink makes the Monitor poll on Linux too: for tests, and
	// for systems where netlink misbehaves.
	DisableNetlink bool
}

// Monitor watches the machine's interfaces and tells subscribers when they
// change and whether the preferred address moved. Create it with
// NewMonitor; its methods are safe for concurrent use.
type Monitor struct {
	policy   Policy
	read     func() (State, error)
	log      *slog.Logger
	debounce time.Duration
	poll     time.Duration
	src      eventSource // nil when polling from the start

	trigger   chan struct{} // OS events; capacity 1, so bursts coalesce
	poke      chan struct{} // Poke; capacity 1
	srcFailed chan error    // the event source died; capacity 1
	done      chan struct{} // closed by Close
	wg        sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex // guards the fields below and every send to a subscriber
	state  State
	pref   netip.Addr
	subs   map[*subscription]struct{}
	closed bool
}

// NewMonitor reads the current state and starts watching for changes. On
// Linux, unless cfg.DisableNetlink is set, a netlink socket bound to link
// and address events triggers re-reads; if it cannot be opened, or fails
// later, the Monitor polls instead. Close it to stop.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	return newMonitor(cfg, newEventSource)
}

// newMonitor is NewMonitor with the event source's constructor as a
// parameter, so tests can inject events.
func newMonitor(cfg MonitorConfig, open func() (eventSource, error)) (*Monitor, error) {
	switch {
	case cfg.Debounce < 0:
		return nil, fmt.Errorf("mobility: negative Debounce %v", cfg.Debounce)
	case cfg.PollInterval < 0:
		return nil, fmt.Errorf("mobility: negative PollInterval %v", cfg.PollInterval)
	case cfg.Policy.Family != 0 && cfg.Policy.Family != 4 && cfg.Policy.Family != 6:
		return nil, fmt.Errorf("mobility: Policy.Family %d is not 0, 4 or 6", cfg.Policy.Family)
	}
	m := &Monitor{
		policy:    cfg.Policy,
		read:      cfg.ReadState,
		log:       cfg.Logger,
		debounce:  cmp.Or(cfg.Debounce, 10*time.Millisecond),
		poll:      cmp.Or(cfg.PollInterval, time.Second),
		trigger:   make(chan struct{}, 1),
		poke:      make(chan struct{}, 1),
		srcFailed: make(chan error, 1),
		done:      make(chan struct{}),
		subs:      make(map[*subscription]struct{}),
	}
	m.policy.Prefer = slices.Clone(cfg.Policy.Prefer) // the caller may reuse its slice
	if m.read == nil {
		m.read = ReadOSState
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}

	// Open the event source before the first read, so that no change can
	// slip between the read and the subscription to events.
	if !cfg.DisableNetlink {
		src, err := open()
		switch {
		case err == nil:
			m.src = src
		case !errors.Is(err, errors.ErrUnsupported):
			m.log.Warn("mobility: no netlink events; polling", "err", err, "interval", m.poll)
		}
	}
	s, err := m.read()
	if err != nil {
		if m.src != nil {
			_ = m.src.close()
		}
		return nil, fmt.Errorf("mobility: reading interfaces: %w", err)
	}
	m.state = s.clone()
	m.pref, _ = m.policy.choose(m.state, netip.Addr{})

	if m.src != nil {
		m.wg.Add(1)
		go m.watch()
	}
	m.wg.Add(1)
	go m.loop(m.src == nil)
	return m, nil
}

// watch turns OS events into triggers until the source is closed or fails.
func (m *Monitor) watch() {
	defer m.wg.Done()
	err := m.src.run(func() {
		select {
		case m.trigger <- struct{}{}:
		default: // a trigger is already pending; it covers this event too
		}
	})
	if err != nil {
		m.srcFailed <- err // capacity 1 and sent at most once: never blocks
	}
}

// loop owns the debounce timer and the poll ticker, and does every read.
func (m *Monitor) loop(polling bool) {
	defer m.wg.Done()
	var (
		tick    <-chan time.Time
		ticker  *time.Ticker
		timer   = time.NewTimer(time.Hour)
		pending bool // timer armed
	)
	timer.Stop()
	defer timer.Stop()
	startPolling := func() {
		ticker = time.NewTicker(m.poll)
		tick = ticker.C
	}
	if polling {
		startPolling()
	}
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	refresh := func() {
		if err := m.refresh(); err != nil && tick == nil && !pending {
			// With netlink, no event may come to prompt another try.
			timer.Reset(m.poll)
			pending = true
		}
	}
	for {
		select {
		case <-m.done:
			return
		case <-m.trigger:
			if !pending {
				// Not pushed back by later events: a steady stream of
				// events must not postpone the read forever.
				timer.Reset(m.debounce)
				pending = true
			}
		case <-timer.C:
			pending = false
			refresh()
		case <-m.poke:
			timer.Stop()
			pending = false
			refresh()
		case <-tick:
			refresh()
		case err := <-m.srcFailed:
			m.log.Warn("mobility: netlink failed; polling", "err", err, "interval", m.poll)
			startPolling()
			refresh() // events may have been lost before the failure
		}
	}
}

// refresh re-reads the state and, if it differs, publishes a Change.
func (m *Monitor) refresh() error {
	s, err := m.read()
	if err != nil {
		m.log.Warn("mobility: reading interfaces", "err", err)
		return err
	}
	s = s.clone()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || s.Equal(m.state) {
		return nil
	}
	pref, _ := m.policy.choose(s, m.pref)
	c := Change{
		Time:             time.Now(),
		Old:              m.state,
		New:              s,
		Preferred:        pref,
		OldPreferred:     m.pref,
		PreferredChanged: pref != m.pref,
	}
	oldAddrs, newAddrs := c.Old.Addrs(), c.New.Addrs()
	c.Removed, c.Added = minus(oldAddrs, newAddrs), minus(newAddrs, oldAddrs)
	m.state, m.pref = s, pref
	m.log.Info("mobility: interfaces changed", "preferred", pref,
		"rebind", c.PreferredChanged, "removed", c.Removed, "added", c.Added)
	for sub := range m.subs {
		sub.send(c)
	}
	return nil
}

// State returns the most recently read state.
func (m *Monitor) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Preferred returns the Policy's pick in State, the zero Addr if none.
func (m *Monitor) Preferred() netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pref
}

// Poke makes the Monitor re-read the state now, without the debounce
// delay, for callers who know something changed. It returns at once; a
// resulting Change arrives on the subscriptions. It does nothing after
// Close.
func (m *Monitor) Poke() {
	select {
	case m.poke <- struct{}{}:
	default: // a poke is pending; it will read the newest state
	}
}

// Close stops the Monitor's goroutines, closes its netlink socket and
// closes every subscription channel. Later calls do nothing and return the
// first call's result.
func (m *Monitor) Close() error {
	m.closeOnce.Do(func() {
		close(m.done)
		if m.src != nil {
			m.closeErr = m.src.close() // ends watch's blocked read
		}
		m.wg.Wait()
		m.mu.Lock()
		defer m.mu.Unlock()
		m.closed = true
		for s := range m.subs {
			s.stop()
			close(s.ch)
		}
		clear(m.subs)
	})
	return m.closeErr
}

// eventSource is an OS source of "something changed" triggers.
type eventSource interface {
	// run calls trigger for each event until close is called (then it
	// returns nil) or the source fails (then it returns the error).
	run(trigger func()) error
	close() error
}

// Allowed returns every usable address of State that the Policy allows,
// best first (see Policy.Allowed).
func (m *Monitor) Allowed() []netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.policy.Allowed(m.state)
}
