package emu

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/mobility/trace"
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Server is the address the relay forwards to. Required.
	Server netip.AddrPort
	// Listen is the relay's first front address, where clients send. If
	// zero, 127.0.0.1 with a free port.
	Listen netip.AddrPort
	// PathConfig sets the links, the hook and the event callback.
	PathConfig
	// Seed seeds the links' random sources.
	Seed uint64
	// Logger receives the relay's diagnostics. If nil, nothing is logged.
	Logger *slog.Logger
}

// Relay is the real-socket form of a Path: a UDP relay on loopback
// between clients and a server, for benchmarks and for tests that cross
// processes. Clients send to ServerAddr; for each client the relay opens
// a socket toward the server, the client's mapping, so the server sees
// each client at an address of its own. Handover replaces the mappings
// with sockets on a new loopback address (127.0.2.x where the system
// allows it, as Linux does; a new port elsewhere) and closes the old
// ones, so what the server still sends to them is refused by the kernel
// rather than counted as DropStale. MoveServer opens a new front on a new
// address. The links, hook and events are those of Path.
//
// A datagram due at once leaves on the goroutine that read it, without a
// copy or a timer; on Linux, runs of datagrams sent with GSO (as quic-go
// sends) are read whole (GRO) and forwarded whole where the link lets all
// of them through now. So an unshaped relay does not become the
// bottleneck of a benchmark; BenchmarkRelay gives its figures. Shaped, it
// times datagrams within a fraction of a millisecond.
type Relay struct {
	shaper // Link, Configure, SetLink, SetHook, Blackout, Handover, Rebind
	server netip.AddrPort
	log    *slog.Logger
	sched  [2]*sched[relayPacket]
	wg     sync.WaitGroup

	front atomic.Pointer[net.UDPConn] // the current front; read per datagram
	noGSO atomic.Bool                 // sending runs failed once: send datagram by datagram

	mu      sync.RWMutex
	fronts  []*net.UDPConn // every front, the old ones now sinks
	clients map[netip.AddrPort]*mapping
	mapIP   netip.Addr // the address of new mappings
	addrs   byte       // loopback addresses drawn so far
	closed  bool
}

var _ trace.Target = (*Relay)(nil)

// mapping is a client's socket toward the server.
type mapping struct {
	client netip.AddrPort
	conn   *net.UDPConn // connected to the server
}

// relayPacket is a datagram held in a relay's link.
type relayPacket struct {
	buf  *[]byte
	n    int
	peer netip.AddrPort // the client: sender for Up, receiver for Down
	via  *net.UDPConn   // Down: the front that sends it
}

var loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// timerSlack is how early the relay sets its timers, to sleep the rest
// precisely: Go's timers may wake a millisecond late, as the netpoller
// sleeps in whole milliseconds.
const timerSlack = 2 * time.Millisecond

// NewRelay starts a relay in front of cfg.Server.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if !cfg.Server.IsValid() {
		return nil, errors.New("emu: RelayConfig.Server is required")
	}
	r := &Relay{
		server:  unmap(cfg.Server),
		log:     cfg.Logger,
		clients: map[netip.AddrPort]*mapping{},
		mapIP:   loopback,
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.init(cfg.PathConfig, cfg.Seed)
	r.remap = r.forget
	for _, dir := range []Dir{Up, Down} {
		deliver := r.deliverDown
		if dir == Up {
			deliver = r.deliverUp
		}
		r.sched[dir] = newSched(deliver, func(p relayPacket, why DropReason) {
			r.drop(time.Now(), dir, p.n, why)
			putBuf(p.buf)
		})
		r.sched[dir].fine, r.sched[dir].early = fineSleep, timerSlack
		r.flush[dir] = r.sched[dir].flush
	}
	listen := cfg.Listen
	if !listen.IsValid() {
		listen = netip.AddrPortFrom(loopback, 0)
	}
	front, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
	if err != nil {
		return nil, err
	}
	r.startFront(front)
	return r, nil
}

func (r *Relay) startFront(front *net.UDPConn) {
	_ = front.SetReadBuffer(4 << 20)
	_ = front.SetWriteBuffer(4 << 20)
	enableGRO(front)
	r.front.Store(front)
	r.fronts = append(r.fronts, front)
	r.wg.Go(func() { r.readFront(front) })
}

// ServerAddr returns the relay's current front: the server's address as
// clients see it.
func (r *Relay) ServerAddr() netip.AddrPort { return localAddr(r.front.Load()) }

func localAddr(c *net.UDPConn) netip.AddrPort {
	return unmap(c.LocalAddr().(*net.UDPAddr).AddrPort())
}

// Server returns the address the relay forwards to.
func (r *Relay) Server() netip.AddrPort { return r.server }

// Mapping returns the address at which the server currently sees the
// client at addr, if the client has one.
func (r *Relay) Mapping(client netip.AddrPort) (netip.AddrPort, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.clients[unmap(client)]
	if !ok {
		return netip.AddrPort{}, false
	}
	return localAddr(m.conn), true
}

// forget closes every mapping; a client's next datagram gets a new one,
// on a new address if newAddr and the system allows it. It is the
// shaper's remap.
func (r *Relay) forget(newAddr bool) {
	r.mu.Lock()
	old := r.clients
	r.clients = map[netip.AddrPort]*mapping{}
	if newAddr {
		r.mapIP = r.nextLoopback(2)
	}
	r.mu.Unlock()
	for _, m := range old {
		m.conn.Close() // the server's datagrams to it now go nowhere
	}
}

// nextLoopback draws an address from 127.0.block.0/24. Whether it can be
// bound is found out when it is used.
func (r *Relay) nextLoopback(block byte) netip.Addr {
	r.addrs++
	if r.addrs == 0 || r.addrs == 255 {
		r.addrs = 1
	}
	return netip.AddrFrom4([4]byte{127, 0, block, r.addrs})
}

// MoveServer opens a new front on a new loopback address (a new port
// where only 127.0.0.1 can be bound). The old front stays open and drops
// everything sent to it, with DropStale.
func (r *Relay) MoveServer() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return net.ErrClosed
	}
	old := localAddr(r.front.Load())
	front, err := listenLoopback(r.nextLoopback(1))
	if err != nil {
		r.mu.Unlock()
		return fmt.Errorf("emu: moving the server: %w", err)
	}
	r.startFront(front)
	r.mu.Unlock()
	r.emit(Event{Time: time.Now(), Kind: EventServerMove, Old: old, New: localAddr(front)})
	return nil
}

// listenLoopback binds a free port on ip, or on 127.0.0.1 where only that
// address of the loopback block exists.
func listenLoopback(ip netip.Addr) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil && ip != loopback {
		return net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	}
	return c, err
}

// Close stops the relay, drops what is in flight and waits for its
// goroutines.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	fronts, clients := r.fronts, r.clients
	r.clients = map[netip.AddrPort]*mapping{}
	r.mu.Unlock()
	for _, c := range fronts {
		c.Close()
	}
	for _, m := range clients {
		m.conn.Close()
	}
	for _, s := range r.sched {
		s.close()
	}
	r.wg.Wait()
	return nil
}

// readFront carries what clients send to one front. Once the front is
// no longer the current one, it is a sink.
func (r *Relay) readFront(front *net.UDPConn) {
	buf, oob := make([]byte, maxRead), make([]byte, oobSize)
	w := newRunWriter()
	addr := localAddr(front)
	for {
		n, oobn, _, client, err := front.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Debug("emu: relay front read", "addr", addr, "err", err)
			continue
		}
		now := time.Now()
		client = unmap(client)
		if front != r.front.Load() {
			r.drop(now, Up, n, DropStale)
			continue
		}
		r.forward(now, Up, client, addr, buf[:n], groSegment(oob[:oobn]), relayPacket{peer: client}, w)
	}
}

// readMapping carries what the server sends to one client's mapping.
func (r *Relay) readMapping(m *mapping) {
	buf, oob := make([]byte, maxRead), make([]byte, oobSize)
	w := newRunWriter()
	local := localAddr(m.conn)
	for {
		n, oobn, _, _, err := m.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNREFUSED while the server is not listening
		}
		p := relayPacket{peer: m.client, via: r.front.Load()}
		r.forward(time.Now(), Down, r.server, local, buf[:n], groSegment(oob[:oobn]), p, w)
	}
}

// maxRead is the largest buffer a read returns: a datagram, or a run of
// them under GRO.
const maxRead = 1 << 16

// runWriter is a reader goroutine's state for sending runs.
type runWriter struct {
	oob []byte
}

func newRunWriter() *runWriter { return &runWriter{oob: make([]byte, oobSize)} }

// forward runs what was read, a datagram or a run of datagrams of seg
// bytes (the last may be shorter), through the link one datagram at a
// time. Those due now leave from the reader's buffer, runs of them in one
// system call; the others are copied and left to the scheduler.
func (r *Relay) forward(now time.Time, dir Dir, from, to netip.AddrPort, data []byte, seg int, p relayPacket, w *runWriter) {
	if seg <= 0 || seg > len(data) {
		seg = len(data)
	}
	s := r.sched[dir]
	start, end := 0, 0 // the run due now: data[start:end]
	flush := func() {
		if end > start {
			r.send(dir, p, data[start:end], seg, w)
		}
	}
	for off := 0; off < len(data); off += seg {
		d := data[off:min(off+seg, len(data))]
		at, ok := r.offer(now, dir, from, to, d)
		if ok && s.due(now, at) {
			if end != off { // a gap: a datagram was dropped or queued
				flush()
				start = off
			}
			end = off + len(d)
			continue
		}
		if !ok {
			continue
		}
		q := p
		q.n = len(d)
		q.buf = getBuf(len(d))
		copy(*q.buf, d)
		if s.submit(now, at, q) {
			s.deliver(q)
		}
	}
	flush()
}

func (r *Relay) deliverUp(p relayPacket)   { r.send(Up, p, (*p.buf)[:p.n], p.n, nil); putBuf(p.buf) }
func (r *Relay) deliverDown(p relayPacket) { r.send(Down, p, (*p.buf)[:p.n], p.n, nil); putBuf(p.buf) }

// send sends data, a run of datagrams of seg bytes, with GSO where it
// can, else one by one.
func (r *Relay) send(dir Dir, p relayPacket, data []byte, seg int, w *runWriter) {
	conn, to := p.via, p.peer
	if dir == Up {
		m, err := r.mapping(p.peer)
		if err != nil {
			r.log.Debug("emu: relay mapping", "client", p.peer, "err", err)
			return
		}
		conn, to = m.conn, netip.AddrPort{} // connected to the server
	}
	if len(data) > seg && w != nil && !r.noGSO.Load() {
		_, _, err := conn.WriteMsgUDPAddrPort(data, gsoOOB(w.oob, seg), to)
		if err == nil || errors.Is(err, net.ErrClosed) {
			return
		}
		r.log.Debug("emu: relay cannot send runs; sending datagrams", "err", err)
		r.noGSO.Store(true)
	}
	for off := 0; off < len(data); off += seg {
		var err error
		if to.IsValid() {
			_, err = conn.WriteToUDPAddrPort(data[off:min(off+seg, len(data))], to)
		} else {
			_, err = conn.Write(data[off:min(off+seg, len(data))])
		}
		if err != nil && !errors.Is(err, net.ErrClosed) {
			r.log.Debug("emu: relay send", "dir", dir, "err", err)
		}
	}
}

// mapping returns the client's mapping, opening one if it has none.
func (r *Relay) mapping(client netip.AddrPort) (*mapping, error) {
	r.mu.RLock()
	m, ok := r.clients[client]
	r.mu.RUnlock()
	if ok {
		return m, nil
	}
	r.mu.Lock()
	m, opened, err := r.openMapping(client)
	r.mu.Unlock()
	if opened {
		r.emit(Event{Time: time.Now(), Kind: EventMapping, Old: client, New: localAddr(m.conn)})
	}
	return m, err
}

// openMapping opens the client's mapping unless it exists; r.mu is held.
func (r *Relay) openMapping(client netip.AddrPort) (m *mapping, opened bool, err error) {
	if m, ok := r.clients[client]; ok {
		return m, false, nil
	}
	if r.closed {
		return nil, false, net.ErrClosed
	}
	laddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.mapIP, 0))
	conn, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(r.server))
	if err != nil && r.mapIP != loopback {
		r.mapIP = loopback // the system has no other loopback address
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0))
		conn, err = net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(r.server))
	}
	if err != nil {
		return nil, false, err
	}
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	enableGRO(conn)
	m = &mapping{client: client, conn: conn}
	r.clients[client] = m
	r.wg.Go(func() { r.readMapping(m) })
	return m, true, nil
}

// Buffers for datagrams held in flight come in two sizes, so that a
// delayed stream of small datagrams does not pin 64 KiB each.
var smallBufs, largeBufs = sync.Pool{New: func() any { b := make([]byte, 2048); return &b }},
	sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

func getBuf(n int) *[]byte {
	if n <= 2048 {
		return smallBufs.Get().(*[]byte)
	}
	return largeBufs.Get().(*[]byte)
}

func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	if cap(*b) == 2048 {
		smallBufs.Put(b)
	} else {
		largeBufs.Put(b)
	}
}
