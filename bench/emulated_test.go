package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/mobility/emu"
)

// The emulated path of the handover benchmarks. Every server, of every
// system, sits behind its own path on loopback that delays each direction
// by oneWay and loses nothing: a mobility/emu relay for the QUIC systems,
// tcpPath (below) for TCP. A server that moves gets a new socket behind a
// new path, so clients see it at a new address.

const (
	oneWay  = 10 * time.Millisecond
	pathRTT = 2 * oneWay // the configured RTT, the unit of the "RTTs" figures
)

var emuLink = emu.LinkConfig{Delay: oneWay}

// Loopback blocks for fresh addresses. The relays draw from 127.0.1.x
// and 127.0.2.x themselves (MoveServer, Handover), which these avoid.
const (
	blockServer = 10 + iota // servers' own sockets
	blockFront              // the fronts of paths: where clients send
	blockClient             // clients: a fresh address per handover
)

var loopbackSeq [256]atomic.Uint32

// wideLoopback reports whether addresses of 127/8 other than 127.0.0.1 can
// be bound, as on Linux, which routes all of 127/8 to lo.
var wideLoopback = sync.OnceValue(func() bool {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 9, 9)})
	if err != nil {
		return false
	}
	c.Close()
	return true
})

// loopbackIP returns an address of 127.block.0.0/16 not handed out
// before, or 127.0.0.1 where only that one can be bound (then only ports
// change).
func loopbackIP(block byte) netip.Addr {
	if !wideLoopback() {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	n := loopbackSeq[block].Add(1) - 1
	return netip.AddrFrom4([4]byte{127, block, byte(n / 250), byte(1 + n%250)})
}

// relayedUDP opens UDP sockets that each sit behind a relay of their own,
// and has the socket report the relay's front as its LocalAddr: peers
// must send there, so that is the address a sal.Host registers, as a
// server behind a one-to-one NAT registers its public address. It has the
// signature of sal.Config.ListenPacket, so a Host that Rebinds gets a new
// socket behind a new relay: a server move, seen from clients, to a new
// address with the same path delay.
type relayedUDP struct {
	hook emu.Hook // given to every relay; may be nil

	mu     sync.Mutex
	relays []*emu.Relay
}

// frontConn is a server's socket that reports its relay's front as its
// address. It keeps every method of *net.UDPConn, so quic-go still uses
// GSO, GRO and ECN on it.
type frontConn struct {
	*net.UDPConn
	front *net.UDPAddr
}

func (c *frontConn) LocalAddr() net.Addr { return c.front }

func (f *relayedUDP) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, network, address)
	if err != nil {
		return nil, err
	}
	uc := pc.(*net.UDPConn)
	r, err := emu.NewRelay(emu.RelayConfig{
		Server:     uc.LocalAddr().(*net.UDPAddr).AddrPort(),
		Listen:     netip.AddrPortFrom(loopbackIP(blockFront), 0),
		PathConfig: emu.PathConfig{Up: emuLink, Down: emuLink, Hook: f.hook},
	})
	if err != nil {
		uc.Close()
		return nil, err
	}
	f.mu.Lock()
	f.relays = append(f.relays, r)
	f.mu.Unlock()
	return &frontConn{UDPConn: uc, front: net.UDPAddrFromAddrPort(r.ServerAddr())}, nil
}

// listen opens a fresh server socket behind its own relay.
func (f *relayedUDP) listen() (*frontConn, error) {
	pc, err := f.ListenPacket(context.Background(), "udp", netip.AddrPortFrom(loopbackIP(blockServer), 0).String())
	if err != nil {
		return nil, err
	}
	return pc.(*frontConn), nil
}

// current returns the relay of the newest socket.
func (f *relayedUDP) current() *emu.Relay {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.relays[len(f.relays)-1]
}

func (f *relayedUDP) Close() {
	f.mu.Lock()
	relays := f.relays
	f.relays = nil
	f.mu.Unlock()
	for _, r := range relays {
		r.Close()
	}
}

// deadAddrs makes client addresses go away, as a device's old address
// does at a handover: its hook drops what a dead address sends and what is
// sent to its mapping. Datagrams already in a link still arrive, as those
// already in the air would.
type deadAddrs struct{ m sync.Map }

// kill makes the client at addr, which the server sees at mapped, dead.
func (d *deadAddrs) kill(addr, mapped netip.AddrPort) {
	d.m.Store(addr, true)
	if mapped.IsValid() {
		d.m.Store(mapped, true)
	}
}

func (d *deadAddrs) hook(p emu.Packet) emu.Verdict {
	a := p.From
	if p.Dir == emu.Down {
		a = p.To
	}
	_, dead := d.m.Load(a)
	return emu.Verdict{Drop: dead}
}

// tcpPath is a TCP proxy in front of a TCP server that emulates the same
// path: it delays every byte by oneWay in each direction (timed as
// precisely as the relay's, see sleepUntil), and it emulates the
// handshake. A proxy accepts a connection at once, where a real server
// sees the connection 1.5 RTT after the client's connect began (SYN,
// SYN-ACK, ACK) and sees no data before then; so the proxy holds the
// client's first bytes until 1.5 RTT after accepting. A real client's
// connect returns 1 RTT after it began, and here at once; but nothing it
// sends arrives sooner than it would, so every answer reaches it when it
// would. What this leaves out is TCP's own loss recovery, which a
// lossless path never needs, and the kernel's detection of a dead peer,
// which the benchmarks replace with an immediate close: the best case for
// TCP.
type tcpPath struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// newTCPPath starts a path on a fresh front address to target.
func newTCPPath(target string) (*tcpPath, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(loopbackIP(blockFront), 0).String())
	if err != nil {
		return nil, err
	}
	p := &tcpPath{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	return p, nil
}

// Addr returns the front, where clients connect.
func (p *tcpPath) Addr() netip.AddrPort { return p.ln.Addr().(*net.TCPAddr).AddrPort() }

func (p *tcpPath) serve() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		accepted := time.Now()
		if !p.track(down) {
			return
		}
		p.wg.Go(func() { p.carry(down, accepted.Add(3*oneWay)) })
	}
}

func (p *tcpPath) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpPath) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// carry relays both directions. Nothing the client sends reaches the
// server before the emulated handshake would have (open); the proxy
// connects to the server at once all the same, so that its own connect
// does not add to the path's delay (the servers here act only on data).
func (p *tcpPath) carry(down net.Conn, open time.Time) {
	defer p.untrack(down)
	up, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(up) {
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Go(func() { deliver(up, down, delayed(down, open)) })
	deliver(down, up, delayed(up, time.Time{}))
	wg.Wait()
}

// piece is what one read from a connection got, and when it arrives at
// the other end of the path. A piece without bytes is the end of the
// stream: an EOF, or a reset.
type piece struct {
	b     []byte
	at    time.Time
	reset bool
}

// delayed reads src until it ends, timing each read to arrive oneWay
// later but not before notBefore.
func delayed(src net.Conn, notBefore time.Time) <-chan piece {
	q := make(chan piece, 1<<14)
	go func() {
		defer close(q)
		arrival := func() time.Time {
			at := time.Now().Add(oneWay)
			if at.Before(notBefore) {
				return notBefore
			}
			return at
		}
		for {
			b := make([]byte, 16<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- piece{b: b[:n], at: arrival()}
			}
			if err != nil {
				q <- piece{at: arrival(), reset: !errors.Is(err, io.EOF)}
				return
			}
		}
	}()
	return q
}

// deliver writes what was read from src to dst, each piece at its time,
// and passes the end on: an EOF as a half-close, a reset as a close. When
// dst refuses a write (its end is gone), src learns it oneWay later, as
// from the reset a real peer would send.
func deliver(dst, src net.Conn, q <-chan piece) {
	var refused bool
	for pc := range q {
		sleepUntil(pc.at)
		switch {
		case refused:
		case pc.reset:
			dst.Close()
		case pc.b == nil:
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		default:
			if _, err := dst.Write(pc.b); err != nil {
				refused = true
				time.AfterFunc(oneWay, func() { src.Close() })
			}
		}
	}
}

// Close stops the proxy and closes every connection through it.
func (p *tcpPath) Close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	p.ln.Close()
	for c := range conns {
		c.Close()
	}
	p.wg.Wait()
}
