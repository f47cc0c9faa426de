package main

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/mobility/emu"
)

// The emulated paths. Every server, of every system, sits behind its own
// path on loopback: a mobility/emu relay for the QUIC systems, tcpPath
// (tcppath.go) for TCP. The handover benchmarks use a path that delays
// each direction by oneWay and loses nothing; `go run ./bench` gives the
// paths the links of its scenarios. A server that moves gets a new socket
// behind a new path, so clients see it at a new address.

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
	link emu.LinkConfig // both directions of every relay, at its start
	hook emu.Hook       // given to every relay; may be nil
	seed uint64         // seeds the relays' links

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
		PathConfig: emu.PathConfig{Up: f.link, Down: f.link, Hook: f.hook},
		Seed:       f.seed,
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

// addrString returns a fresh address of the block, port 0, for a Host's
// ListenAddr.
func addrString(block byte) string { return netip.AddrPortFrom(loopbackIP(block), 0).String() }

// offered returns the bytes the clients offered every relay toward the
// server: what they sent.
func (f *relayedUDP) offered() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n uint64
	for _, r := range f.relays {
		n += r.Link(emu.Up).Stats().Offered
	}
	return n
}
