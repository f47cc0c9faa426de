package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
	"github.com/stretchr/testify/require"
)

// The handover benchmarks measure the stall a moving end causes in a live
// flow (see flowstream_test.go for the workload and the stall), over the
// emulated path of emulated_test.go (20 ms RTT, no loss), for roam and for
// what an application would otherwise use, in the same run. The systems
// stream side by side the whole time and take turns at handovers, one
// system at a time and in rotating order, so that machine noise hits them
// alike: handoversPerOp handovers per system per iteration. Each system
// reports p50 and p99 of its stalls in ms and in RTTs of the configured
// path; with few handovers, p99 is the worst one. noise-p99-ms is the
// longest gap in the quiet 100 ms before each handover: the floor under
// every figure, set by the sender's 1 ms ticker and the machine's
// scheduling.
//
// A handover is hard. When a client moves, its old address is gone at the
// instant the handover begins: the path drops all that the old address
// sends or is sent from then on (what is already in the path still
// arrives). When a server moves, it closes its old socket or connections
// once its new address is registered. The registry is in process
// (resolve.Memory) and pushes changes at once; roam's dialers and the
// baselines' clients all watch it, so none waits for the old connection's
// close to reach it (a remote registry would add its own delay to all).

const handoversPerOp = 3

// mover is one system carrying one flow, with its record of handovers.
type mover struct {
	name string
	rec  *recorder
	// move makes one handover and returns when the server's new
	// registration became visible (zero if the server does not move).
	move func(ctx context.Context) (registered time.Time, err error)

	stalls, afterReg, noise []time.Duration
}

func (m *mover) handover(ctx context.Context) error {
	t0 := time.Now()
	g, _ := m.rec.longestGap(t0.Add(-quietTime), t0)
	m.noise = append(m.noise, max(g-msgEvery, 0))
	reg, err := m.move(ctx)
	if err != nil {
		return fmt.Errorf("%s: handover: %w", m.name, err)
	}
	end, err := m.rec.settle(t0)
	if err != nil {
		return fmt.Errorf("%s: %w", m.name, err)
	}
	g, _ = m.rec.longestGap(t0, end)
	m.stalls = append(m.stalls, max(g-msgEvery, 0))
	if !reg.IsZero() {
		// From the registration to the end of the silence after it.
		_, resumed := m.rec.longestGap(reg, end)
		m.afterReg = append(m.afterReg, max(resumed.Sub(reg), 0))
	}
	time.Sleep(quietTime)
	return nil
}

// runHandovers waits for every flow to run, then makes b.N*handoversPerOp
// handovers per system, taking turns, and reports the figures.
func runHandovers(b *testing.B, movers []*mover) {
	ctx := b.Context()
	start := time.Now()
	for _, m := range movers {
		_, err := m.rec.settle(start)
		require.NoError(b, err, m.name)
	}
	time.Sleep(quietTime)
	b.ResetTimer()
	for i := range b.N * handoversPerOp {
		for j := range movers {
			require.NoError(b, movers[(i+j)%len(movers)].handover(ctx))
		}
	}
	b.StopTimer()
	var noise []time.Duration
	for _, m := range movers {
		noise = append(noise, m.noise...)
		p50, p99 := percentile(m.stalls, .50), percentile(m.stalls, .99)
		b.ReportMetric(ms(p50), m.name+"-p50-ms")
		b.ReportMetric(ms(p99), m.name+"-p99-ms")
		b.ReportMetric(rtts(p50), m.name+"-p50-RTTs")
		b.ReportMetric(rtts(p99), m.name+"-p99-RTTs")
		line := fmt.Sprintf("%-5s %2d handovers: stall p50 %6.1f ms (%.2f RTT), p99 %6.1f ms (%.2f RTT)",
			m.name, len(m.stalls), ms(p50), rtts(p50), ms(p99), rtts(p99))
		if len(m.afterReg) > 0 {
			r50, r99 := percentile(m.afterReg, .50), percentile(m.afterReg, .99)
			b.ReportMetric(ms(r50), m.name+"-reg-p50-ms")
			b.ReportMetric(ms(r99), m.name+"-reg-p99-ms")
			line += fmt.Sprintf("; after the registration p50 %6.1f ms, p99 %6.1f ms", ms(r50), ms(r99))
		}
		b.Log(line)
	}
	b.ReportMetric(ms(percentile(noise, .99)), "noise-p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkHandoverClient moves the client to a new address:
//
//   - roam: Host.Rebind, which migrates the connection with quic-go's
//     path API (probe the new path, then switch);
//   - quic: raw quic-go, the same by hand (AddPath, Probe, Switch);
//   - tcp: the connection dies with the address; the client reconnects
//     from its new address and resumes (reconnect_test.go).
//
// From roam's client events: migrations (EventMigrated) and suspensions
// per handover; a migration that fails shows as a suspension.
// Target (the flow-mobility issue): roam's p50 at most 1 RTT + 5 ms.
func BenchmarkHandoverClient(b *testing.B) {
	var wg sync.WaitGroup
	b.Cleanup(wg.Wait) // runs last: every goroutine has ended
	s := schedule{start: time.Now()}
	roam, events := roamFlow(b, &wg, s, false)
	movers := []*mover{roam, quicMigrating(b, &wg, s), tcpClientMoving(b, &wg, s)}
	runHandovers(b, movers)
	n := float64(len(roam.stalls))
	b.ReportMetric(float64(events.count(sal.EventMigrated))/n, "roam-migrated/handover")
	b.ReportMetric(float64(events.count(sal.EventSuspended))/n, "roam-suspended/handover")
}

// BenchmarkHandoverServer moves the server to a new address, which it
// registers in the shared registry:
//
//   - roam: Host.Rebind; the flows resume at the new address;
//   - quic: raw quic-go cannot follow a server (QUIC lets only clients
//     migrate): the server closes the old connection, and the client
//     reconnects to the new address and resumes, as over TCP;
//   - tcp: the same over TCP.
//
// Besides the stall, each reports the time from the moment the new
// registration became visible to the end of the silence after it (reg).
// From roam's client events: suspensions and resumes per handover, and
// the p50 of the flow's own measure of its stall (EventResumed.Stall).
// Target (the flow-mobility issue): roam's at most 2 RTT + 20 ms after the
// re-registration.
func BenchmarkHandoverServer(b *testing.B) {
	var wg sync.WaitGroup
	b.Cleanup(wg.Wait)
	s := schedule{start: time.Now()}
	roam, events := roamFlow(b, &wg, s, true)
	movers := []*mover{roam, quicReconnecting(b, &wg, s), tcpServerMoving(b, &wg, s)}
	runHandovers(b, movers)
	n := float64(len(roam.stalls))
	b.ReportMetric(float64(events.count(sal.EventSuspended))/n, "roam-suspended/handover")
	b.ReportMetric(float64(events.count(sal.EventResumed))/n, "roam-resumed/handover")
	b.ReportMetric(ms(percentile(events.stalls(), .50)), "roam-evstall-p50-ms")
}

// registrar is the moving server's registry: it notes when the newest
// registration became visible.
type registrar struct {
	*resolve.Memory
	last atomic.Pointer[time.Time]
}

func (r *registrar) Register(ctx context.Context, service string, ep resolve.Endpoint) (resolve.Registration, error) {
	reg, err := r.Memory.Register(ctx, service, ep)
	now := time.Now()
	r.last.Store(&now)
	return reg, err
}

// eventLog keeps a Host's events.
type eventLog struct {
	mu     sync.Mutex
	events []sal.Event
}

func (l *eventLog) record(e sal.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) count(k sal.EventKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if e.Kind == k {
			n++
		}
	}
	return n
}

// stalls returns the Stall of every EventResumed: the flow's own measure
// of its time without a carrier.
func (l *eventLog) stalls() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []time.Duration
	for _, e := range l.events {
		if e.Kind == sal.EventResumed {
			ds = append(ds, e.Stall)
		}
	}
	return ds
}

func newHost(tb testing.TB, cfg sal.Config) *sal.Host {
	h, err := sal.NewHost(cfg)
	require.NoError(tb, err)
	tb.Cleanup(func() { h.Close() })
	return h
}

// roamFlow streams over a roam flow whose client (or, with serverMoves,
// whose server) moves at each handover.
func roamFlow(b *testing.B, wg *sync.WaitGroup, s schedule, serverMoves bool) (*mover, *eventLog) {
	ctx := b.Context()
	dead := &emu.DeadAddrs{}
	socks := &relayedUDP{link: emuLink, hook: dead.Hook}
	b.Cleanup(socks.Close)
	mem := resolve.NewMemory()
	reg := &registrar{Memory: mem}
	server := newHost(b, sal.Config{Resolver: reg, ListenAddr: addrString(blockServer), ListenPacket: socks.ListenPacket})
	events := &eventLog{}
	client := newHost(b, sal.Config{Resolver: mem, ListenAddr: addrString(blockClient), OnEvent: events.record})
	l, err := server.Listen(ctx, "stream.bench")
	require.NoError(b, err)
	c, err := client.Dial(ctx, "stream.bench")
	require.NoError(b, err)
	sc, err := l.AcceptContext(ctx)
	require.NoError(b, err)
	m := &mover{name: "roam", rec: newRecorder(s)}
	wg.Go(func() { m.rec.drain(sc) })
	wg.Go(func() { s.pump(ctx, c, 0) })
	if serverMoves {
		m.move = func(ctx context.Context) (time.Time, error) {
			err := server.Rebind(ctx, addrString(blockServer))
			return *reg.last.Load(), err
		}
		return m, events
	}
	m.move = func(ctx context.Context) (time.Time, error) {
		old := client.LocalAddr()
		mapped, _ := socks.current().Mapping(old)
		dead.Kill(old, mapped)
		return time.Time{}, client.Rebind(ctx, addrString(blockClient))
	}
	return m, events
}

func listenUDP(tb testing.TB, block byte) *net.UDPConn {
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopbackIP(block), 0)))
	require.NoError(tb, err)
	return uc
}

// quicMigrating streams over one raw quic-go connection, which the client
// migrates by hand at each handover.
func quicMigrating(b *testing.B, wg *sync.WaitGroup, s schedule) *mover {
	ctx := b.Context()
	dead := &emu.DeadAddrs{}
	socks := &relayedUDP{link: emuLink, hook: dead.Hook}
	b.Cleanup(socks.Close)
	serverTLS, clientTLS := benchTLS(b, false)
	pc, err := socks.listen()
	require.NoError(b, err)
	str := &quic.Transport{Conn: pc}
	b.Cleanup(func() { str.Close(); pc.Close() })
	ln, err := str.Listen(serverTLS, nil)
	require.NoError(b, err)
	m := &mover{name: "quic", rec: newRecorder(s)}
	wg.Go(func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		if st, err := c.AcceptStream(ctx); err == nil {
			m.rec.drain(st)
		}
	})

	var trsMu sync.Mutex
	uc := listenUDP(b, blockClient)
	trs := []*quic.Transport{{Conn: uc}}
	b.Cleanup(func() {
		trsMu.Lock()
		defer trsMu.Unlock()
		for _, tr := range trs {
			tr.Close()
			tr.Conn.Close()
		}
	})
	conn, err := trs[0].Dial(ctx, pc.LocalAddr(), clientTLS, nil)
	require.NoError(b, err)
	b.Cleanup(func() { conn.CloseWithError(0, "") })
	st, err := conn.OpenStreamSync(ctx)
	require.NoError(b, err)
	wg.Go(func() { s.pump(ctx, st, 0) })
	m.move = func(ctx context.Context) (time.Time, error) {
		old := uc.LocalAddr().(*net.UDPAddr).AddrPort()
		mapped, _ := socks.current().Mapping(old)
		dead.Kill(old, mapped)
		uc = listenUDP(b, blockClient)
		tr := &quic.Transport{Conn: uc}
		trsMu.Lock()
		trs = append(trs, tr)
		trsMu.Unlock()
		path, err := conn.AddPath(tr)
		if err != nil {
			return time.Time{}, err
		}
		pctx, cancel := context.WithTimeout(ctx, hangBound)
		defer cancel()
		if err := path.Probe(pctx); err != nil {
			return time.Time{}, err
		}
		return time.Time{}, path.Switch()
	}
	return m
}

// tcpClientMoving streams over TCP; at each handover the client's
// connection dies with its address, and it reconnects from a new one.
func tcpClientMoving(b *testing.B, wg *sync.WaitGroup, s schedule) *mover {
	m := &mover{name: "tcp", rec: newRecorder(s)}
	srv := &tcpServer{recv: oneFlow(m.rec), mem: resolve.NewMemory(), name: "stream.bench"}
	_, err := srv.move(b.Context())
	require.NoError(b, err)
	b.Cleanup(srv.Close)
	var local atomic.Pointer[netip.Addr]
	ip := loopbackIP(blockClient)
	local.Store(&ip)
	send := &resumeSender{send: s.pump, mem: srv.mem, name: srv.name, connect: tcpConnect(func() netip.Addr { return *local.Load() })}
	wg.Go(func() { send.run(b.Context()); send.wg.Wait() })
	m.move = func(context.Context) (time.Time, error) {
		ip := loopbackIP(blockClient)
		local.Store(&ip)
		send.drop()
		return time.Time{}, nil
	}
	return m
}

// quicReconnecting streams over raw quic-go to a server that moves; the
// client reconnects to it.
func quicReconnecting(b *testing.B, wg *sync.WaitGroup, s schedule) *mover {
	serverTLS, clientTLS := benchTLS(b, false)
	socks := &relayedUDP{link: emuLink}
	b.Cleanup(socks.Close)
	m := &mover{name: "quic", rec: newRecorder(s)}
	srv := &quicServer{recv: oneFlow(m.rec), mem: resolve.NewMemory(), name: "stream.bench", tlsCfg: serverTLS, socks: socks}
	_, err := srv.move(b.Context())
	require.NoError(b, err)
	b.Cleanup(srv.Close)
	uc := listenUDP(b, blockClient)
	tr := &quic.Transport{Conn: uc}
	b.Cleanup(func() { tr.Close(); uc.Close() })
	send := &resumeSender{send: s.pump, mem: srv.mem, name: srv.name, connect: quicConnect(tr, clientTLS)}
	require.NoError(b, send.follow(b.Context()))
	wg.Go(func() { send.run(b.Context()); send.wg.Wait() })
	m.move = srv.move
	return m
}

// tcpServerMoving streams over TCP to a server that moves; the client
// reconnects to it.
func tcpServerMoving(b *testing.B, wg *sync.WaitGroup, s schedule) *mover {
	m := &mover{name: "tcp", rec: newRecorder(s)}
	srv := &tcpServer{recv: oneFlow(m.rec), mem: resolve.NewMemory(), name: "stream.bench"}
	_, err := srv.move(b.Context())
	require.NoError(b, err)
	b.Cleanup(srv.Close)
	ip := loopbackIP(blockClient)
	send := &resumeSender{send: s.pump, mem: srv.mem, name: srv.name, connect: tcpConnect(func() netip.Addr { return ip })}
	require.NoError(b, send.follow(b.Context()))
	wg.Go(func() { send.run(b.Context()); send.wg.Wait() })
	m.move = srv.move
	return m
}

// oneFlow is the server of the handover benchmarks' single flow.
func oneFlow(rec *recorder) *resumeServer {
	return &resumeServer{sink: func(uint64) streamSink { return rec }}
}
