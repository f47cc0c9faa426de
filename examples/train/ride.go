package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/mobility/trace"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/sal"
)

// service is the name the train dials; nobody on the train knows where it
// runs.
const service = "telemetry.train"

// config is one ride.
type config struct {
	Trace     *trace.Trace
	TraceName string        // for the summary
	Duration  time.Duration // of the ride; 0 rides the whole trace
	Seed      uint64        // seeds the emulated links' loss and jitter
	// UpRate is the rate of the train's telemetry in bit/s; 0 sends it as
	// fast as the path takes it, like the service's stream.
	UpRate int64
	// Status, if set, is called about once a second with the ride's state.
	Status func(status)
	// Logger receives the diagnostics of roam and the emulator; nil
	// discards them.
	Logger *slog.Logger
}

// status is the ride's state as the live status line shows it.
type status struct {
	Elapsed         time.Duration
	Cell, Handovers int
	Outage          string // "handover" or "tunnel" while the path is down
	LastStall       time.Duration
	Stalling        bool // LastStall is still growing
	DownMbps        float64
	UpMbps          float64
	Verified        uint64
}

// Timings of a ride.
const (
	dialTimeout = 30 * time.Second
	// drainGrace is how long the flow has, once the ride is over (and any
	// outage then under way has passed), to deliver what it accepted: at
	// most a flow buffer in each direction.
	drainGrace = 20 * time.Second
	// stallWindow: a gap in delivery counts as a handover's stall if it
	// begins by the end of the outage plus this.
	stallWindow = 500 * time.Millisecond
	// flowBuffer bounds what each end keeps for replay, and so how far a
	// writer runs ahead of its reader: above the bandwidth-delay product
	// of hsr-300's fastest cells (20 Mbit/s x 150 ms), and small enough
	// that the tail in flight when a ride ends drains in a few seconds
	// even at the 1 Mbit/s that a loss-limited cell gives.
	flowBuffer = 512 << 10
	// defaultUpRate is the rate of the train's telemetry: 128-byte
	// messages every 5 ms, 205 kbit/s.
	defaultUpRate = 128 * 8 * 200
)

// telemetrySender paces the train's telemetry at rate bit/s: messages of
// 128 bytes, or more at rates that would need them more often than every
// millisecond.
func telemetrySender(rate int64) *sender {
	if rate <= 0 {
		return newSender(keyUp)
	}
	size := 128
	every := time.Duration(int64(size) * 8 * int64(time.Second) / rate)
	if every < time.Millisecond {
		every = time.Millisecond
		size = int(rate / 8 / 1000)
	}
	return newPacedSender(keyUp, size, every)
}

// ride is everything one run puts up: an embedded registry, a provider
// Host serving the service behind an emulated path, and a client Host on
// the train that dials the service by name, and the flow between them.
type ride struct {
	cfg     config
	log     *slog.Logger
	closers closeStack
	// life outlives the ride's ctx: the flow drains after an interrupted
	// ride, and the train must still take up its address after a
	// handover.
	life    context.Context
	endLife context.CancelFunc

	train    *train
	conn     *sal.Conn // the train's end of the flow
	counts   eventCounts
	appErrs  appErrors
	down, up *sender // the service's stream, the train's telemetry
	downRecv *receiver
	upRecv   atomic.Pointer[receiver] // set when the service accepts
	t0       time.Time

	served   chan struct{} // the service's end is over
	received chan struct{} // the train read the stream to its end
	upDone   chan struct{} // the train's sender returned
	wg       sync.WaitGroup
}

// run rides cfg.Trace for cfg.Duration: the service streams verified
// bytes to the train as fast as the path allows, and the train sends
// verified telemetry back. When ctx ends the ride ends early; the flow
// still drains and the summary is complete. The error is for a ride that
// could not start; what went wrong during one is in the summary.
func run(ctx context.Context, cfg config) (*summary, error) {
	r := &ride{
		cfg: cfg, log: cfg.Logger,
		down: newSender(keyDown), up: telemetrySender(cfg.UpRate),
		served: make(chan struct{}), received: make(chan struct{}), upDone: make(chan struct{}),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.life, r.endLife = context.WithCancel(context.WithoutCancel(ctx))
	defer r.close()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	length := cfg.Duration
	if length <= 0 {
		length = cfg.Trace.Duration()
	}
	end := r.ride(ctx, length)
	drained := r.finish(end.at)

	s := &summary{
		Trace: cfg.TraceName, Seed: cfg.Seed, Interrupted: ctx.Err() != nil, Drained: drained,
		DurationS: round(end.at.Sub(r.t0).Seconds(), 3), RTTMs: round(ms(end.rtt), 1),
	}
	s.fill(r.train, r.downRecv, r.upReceiver(), r.down.sent.Load(), r.up.sent.Load(), end.at, end.delivered)
	s.Migrations = int(r.counts.migrations.Load())
	s.Resumes = int(r.counts.resumes.Load())
	s.FlowsLost = int(r.counts.lost.Load())
	s.setErrors(r.appErrs.list())
	return s, nil
}

func (r *ride) setup(ctx context.Context) error {
	reg, err := registry.Listen("127.0.0.1:0", registry.Config{Logger: r.log})
	if err != nil {
		return err
	}
	r.closers.push(reg.Close)
	openResolver := func() (resolve.Resolver, error) {
		res, err := resolve.Open(ctx, reg.URL())
		if c, ok := res.(io.Closer); ok {
			r.closers.push(c.Close)
		}
		return res, err
	}

	provRes, err := openResolver()
	if err != nil {
		return err
	}
	provider, err := sal.NewHost(sal.Config{
		Resolver: provRes, ListenAddr: "127.0.0.1:0", FlowBuffer: flowBuffer,
		OnEvent: r.counts.provider, Logger: r.log.With("host", "provider"),
	})
	if err != nil {
		return err
	}
	r.closers.push(provider.Close)

	// The provider sits behind the emulated path, the train's cellular
	// link: it registers the relay's front, where the train sends, as a
	// server behind a NAT registers its public address.
	r.train = &train{life: r.life, provider: provider, cell: 1, link: linkAt(r.cfg.Trace, 0), log: r.log}
	r.train.relay, err = emu.NewRelay(emu.RelayConfig{
		Server: provider.LocalAddr(),
		PathConfig: emu.PathConfig{
			Up: emu.LinkConfigOf(r.train.link), Down: emu.LinkConfigOf(r.train.link), Hook: r.train.dead.Hook,
		},
		Seed: r.cfg.Seed, Logger: r.log.With("part", "relay"),
	})
	if err != nil {
		return err
	}
	r.closers.push(r.train.relay.Close)
	if err := provider.SetAdvertiseAddr(ctx, r.train.relay.ServerAddr()); err != nil {
		return err
	}
	ln, err := provider.Listen(ctx, service)
	if err != nil {
		return err
	}
	r.wg.Go(func() { r.serve(ln) })

	clientRes, err := openResolver()
	if err != nil {
		return err
	}
	client, err := sal.NewHost(sal.Config{
		Resolver: clientRes, ListenAddr: cellAddr(1), FlowBuffer: flowBuffer,
		OnEvent: r.counts.client, Logger: r.log.With("host", "train"),
	})
	if err != nil {
		return err
	}
	r.closers.push(client.Close)
	r.train.client = client

	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	r.conn, err = client.Dial(dctx, service)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", service, err)
	}
	r.closers.push(r.conn.Close)
	r.t0 = time.Now()
	r.train.t0 = r.t0
	r.downRecv = newReceiver(keyDown, r.down.every, r.t0)
	r.wg.Go(func() {
		defer close(r.upDone)
		r.appErrs.add("train: sending", r.up.run(r.conn))
	})
	r.wg.Go(func() {
		defer close(r.received)
		r.appErrs.add("train: receiving", r.downRecv.drain(r.conn))
	})
	r.log.Debug("riding", "service", service, "provider", r.train.relay.ServerAddr(), "train", client.LocalAddr())
	return nil
}

// serve is the service: it takes the train's flow, streams to it until
// the train half-closes its telemetry, then half-closes its own side.
func (r *ride) serve(ln *sal.Listener) {
	defer close(r.served)
	c, err := ln.AcceptContext(r.life)
	if err != nil {
		return // the ride never started
	}
	defer c.Close()
	rc := newReceiver(keyUp, r.up.every, time.Now())
	r.upRecv.Store(rc)
	var sending sync.WaitGroup
	sending.Go(func() { r.appErrs.add("service: sending", r.down.run(c)) })
	r.appErrs.add("service: receiving", rc.drain(c))
	r.down.halt(c)
	sending.Wait()
	r.appErrs.add("service: closing", c.CloseWrite())
}

// upReceiver returns the service's receiver, or an empty one before the
// service accepted the flow.
func (r *ride) upReceiver() *receiver {
	if rc := r.upRecv.Load(); rc != nil {
		return rc
	}
	return newReceiver(keyUp, r.up.every, r.t0)
}

// rideEnd is the state of the flow when the ride ended.
type rideEnd struct {
	at        time.Time
	delivered [2]uint64 // bytes read by then, down and up
	rtt       time.Duration
}

// ride plays the trace for length, or until ctx ends, and reports the
// status every second.
func (r *ride) ride(ctx context.Context, length time.Duration) rideEnd {
	rideCtx, endRide := context.WithTimeout(ctx, length)
	defer endRide()
	var playing sync.WaitGroup
	defer playing.Wait()
	playing.Go(func() {
		if err := trace.Play(rideCtx, r.cfg.Trace, r.train); err != nil && rideCtx.Err() == nil {
			r.log.Warn("trace player", "err", err)
		}
	})
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last [2]uint64
	lastTick := r.t0
	for {
		select {
		case <-rideCtx.Done():
			return rideEnd{
				at:        time.Now(),
				delivered: [2]uint64{r.downRecv.received(), r.upReceiver().received()},
				rtt:       r.conn.Stats().SmoothedRTT,
			}
		case now := <-tick.C:
			if r.cfg.Status == nil {
				continue
			}
			st := r.train.status(now, r.downRecv, r.upReceiver())
			cur := [2]uint64{r.downRecv.received(), r.upReceiver().received()}
			secs := now.Sub(lastTick).Seconds()
			st.DownMbps, st.UpMbps = mbps(cur[0]-last[0], secs), mbps(cur[1]-last[1], secs)
			st.Verified = cur[0] + cur[1]
			last, lastTick = cur, now
			r.cfg.Status(st)
		}
	}
}

// finish ends the flow as an application would: the train stops sending
// and half-closes; the service reads to the end, then does the same; the
// train reads to the end. It reports whether all that happened in time.
func (r *ride) finish(rideEnd time.Time) (drained bool) {
	r.up.halt(r.conn)
	<-r.upDone // returns at once: halt interrupts a pending Write
	r.appErrs.add("train: closing", r.conn.CloseWrite())
	limit := r.train.outageLeft(rideEnd) + drainGrace
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for _, done := range []chan struct{}{r.served, r.received} {
		select {
		case <-done:
		case <-timer.C:
			r.appErrs.add("drain", fmt.Errorf("the flow did not finish within %v of the ride's end", limit))
			return false
		}
	}
	return true
}

// close tears everything down, newest first, and waits for the ride's
// goroutines, which closing the flow and the Hosts ends.
func (r *ride) close() {
	r.endLife()
	r.closers.close()
	r.wg.Wait()
	if r.train != nil {
		r.train.wg.Wait()
	}
}

// eventCounts counts the Hosts' events. Resumes count at the dialing end
// only, once per resume of the flow.
type eventCounts struct {
	migrations, resumes, lost atomic.Int64
}

func (e *eventCounts) client(ev sal.Event) {
	switch ev.Kind {
	case sal.EventMigrated:
		e.migrations.Add(1)
	case sal.EventResumed:
		e.resumes.Add(1)
	case sal.EventLost:
		e.lost.Add(1)
	}
}

func (e *eventCounts) provider(ev sal.Event) {
	if ev.Kind == sal.EventLost {
		e.lost.Add(1)
	}
}

// appErrors collects the errors the applications saw.
type appErrors struct {
	mu   sync.Mutex
	errs []string
}

func (a *appErrors) add(where string, err error) {
	if err == nil {
		return
	}
	a.mu.Lock()
	a.errs = append(a.errs, where+": "+err.Error())
	a.mu.Unlock()
}

func (a *appErrors) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.errs...)
}

// closeStack closes what was opened, newest first.
type closeStack struct {
	mu sync.Mutex
	fs []func() error
}

func (s *closeStack) push(f func() error) {
	s.mu.Lock()
	s.fs = append(s.fs, f)
	s.mu.Unlock()
}

func (s *closeStack) close() {
	s.mu.Lock()
	fs := s.fs
	s.fs = nil
	s.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		_ = fs[i]()
	}
}

func mbps(bytes uint64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(bytes) * 8 / secs / 1e6
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
