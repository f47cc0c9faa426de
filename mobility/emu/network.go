package emu

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
)

// maxDatagram is the largest UDP payload over IPv4.
const maxDatagram = 65507

var (
	errMissingAddress = errors.New("emu: missing address")
	errMessageTooLong = errors.New("emu: message too long")
	// ErrNetworkClosed is returned by a closed Network's Listen and NewPath.
	ErrNetworkClosed = errors.New("emu: network closed")
)

// Address blocks the network draws from. None of them is routed on the
// Internet, and nothing here ever leaves the process.
var (
	frontBlock   = netip.MustParsePrefix("198.18.0.0/15") // servers' addresses as clients see them (RFC 2544)
	mappingBlock = netip.MustParsePrefix("100.64.0.0/10") // clients as servers see them (RFC 6598, carrier-grade NAT)
)

const firstEphemeral = 49152

// Network is an in-memory network of UDP-like sockets. Datagrams between
// sockets are delivered at once and never lost; a Path puts a modelled
// link, with NAT-like address changes, between clients and a server.
// Everything runs on the time package's clock and timers, so inside a
// testing/synctest bubble it runs in virtual time and leaves nothing
// running once closed.
type Network struct {
	seed uint64

	mu     sync.Mutex
	conns  map[netip.AddrPort]*PacketConn
	routes map[netip.AddrPort]router // fronts and mappings, current and old
	ports  map[netip.Addr]uint16     // the next ephemeral port to try, per address
	paths  []*Path
	fronts uint32 // addresses drawn from frontBlock
	maps   uint32 // addresses drawn from mappingBlock
	closed bool
}

// NewNetwork returns an empty network. The seed makes the random
// decisions of its paths repeatable: the same seed, paths and datagrams
// give the same losses and delays.
func NewNetwork(seed uint64) *Network {
	return &Network{
		seed:   seed,
		conns:  map[netip.AddrPort]*PacketConn{},
		routes: map[netip.AddrPort]router{},
		ports:  map[netip.Addr]uint16{},
	}
}

// Listen opens a socket bound to addr. A zero port picks a free one; an
// unspecified address (0.0.0.0 or ::) receives datagrams sent to any
// address with its port that no other socket is bound to, and sends from
// loopback.
func (n *Network) Listen(addr netip.AddrPort) (*PacketConn, error) {
	addr = unmap(addr)
	n.mu.Lock()
	defer n.mu.Unlock()
	fail := func(err error) (*PacketConn, error) {
		return nil, &net.OpError{Op: "listen", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: err}
	}
	if n.closed {
		return fail(ErrNetworkClosed)
	}
	if !addr.Addr().IsValid() {
		return fail(errMissingAddress)
	}
	if addr.Port() == 0 {
		port, ok := n.freePort(addr.Addr())
		if !ok {
			return fail(&os.SyscallError{Syscall: "bind", Err: syscall.EADDRINUSE})
		}
		addr = netip.AddrPortFrom(addr.Addr(), port)
	} else if n.taken(addr) {
		return fail(&os.SyscallError{Syscall: "bind", Err: syscall.EADDRINUSE})
	}
	c := newPacketConn(n, addr)
	n.conns[addr] = c
	return c, nil
}

// ListenPacket opens a socket as net.ListenConfig.ListenPacket would, for
// the networks "udp", "udp4" and "udp6" and literal addresses such as
// "127.0.0.1:0", ":0" or "[::1]:443" ("localhost" is loopback). Its
// signature is that of sal.Config.ListenPacket, so that Hosts can run on
// the network.
func (n *Network) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	fail := func(err error) (net.PacketConn, error) {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if network != "udp" && network != "udp4" && network != "udp6" {
		return fail(net.UnknownNetworkError(network))
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return fail(err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fail(&net.AddrError{Err: "invalid port", Addr: address})
	}
	var ip netip.Addr
	switch host {
	case "":
		ip = netip.IPv4Unspecified()
		if network == "udp6" {
			ip = netip.IPv6Unspecified()
		}
	case "localhost":
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		if network == "udp6" {
			ip = netip.IPv6Loopback()
		}
	default:
		if ip, err = netip.ParseAddr(host); err != nil || ip.Zone() != "" {
			return fail(&net.AddrError{Err: "not a literal IP address", Addr: host})
		}
		ip = ip.Unmap()
	}
	if network == "udp4" && !ip.Is4() || network == "udp6" && !ip.Is6() {
		return fail(&net.AddrError{Err: "address family mismatch", Addr: address})
	}
	c, err := n.Listen(netip.AddrPortFrom(ip, uint16(port)))
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes every socket and path of the network.
func (n *Network) Close() error {
	n.mu.Lock()
	n.closed = true
	conns := make([]*PacketConn, 0, len(n.conns))
	for _, c := range n.conns {
		conns = append(conns, c)
	}
	paths := n.paths
	n.mu.Unlock()
	for _, p := range paths {
		p.Close()
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// taken reports whether addr is bound by a socket or used by a path. As
// in the kernel, a socket bound to an unspecified address takes its port
// on every address of its family.
func (n *Network) taken(addr netip.AddrPort) bool {
	if _, ok := n.conns[addr]; ok {
		return true
	}
	if _, ok := n.routes[addr]; ok {
		return true
	}
	if _, ok := n.conns[netip.AddrPortFrom(unspecified(addr.Addr()), addr.Port())]; ok {
		return true
	}
	if addr.Addr().IsUnspecified() {
		for a := range n.conns {
			if a.Port() == addr.Port() && a.Addr().Is4() == addr.Addr().Is4() {
				return true
			}
		}
	}
	return false
}

func unspecified(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func (n *Network) freePort(ip netip.Addr) (uint16, bool) {
	next := n.ports[ip]
	if next < firstEphemeral {
		next = firstEphemeral
	}
	for range 65536 - firstEphemeral {
		port := next
		next++
		if next == 0 {
			next = firstEphemeral
		}
		if !n.taken(netip.AddrPortFrom(ip, port)) {
			n.ports[ip] = next
			return port, true
		}
	}
	return 0, false
}

// nextAddr draws the i-th address of a block, skipping the network's own
// address; the blocks hold more addresses than any test uses.
func nextAddr(block netip.Prefix, i *uint32) netip.Addr {
	*i++
	a := block.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += *i
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (n *Network) unbind(c *PacketConn) {
	n.mu.Lock()
	if n.conns[c.local] == c {
		delete(n.conns, c.local)
	}
	n.mu.Unlock()
}

// router takes the datagrams sent to addresses it owns: a Path, or a
// MultiPath's shared front.
type router interface {
	receive(from, to netip.AddrPort, data []byte)
}

// send routes a datagram: to a path if it owns the destination, else to
// the socket bound to it. data belongs to the network from now on.
func (n *Network) send(from, to netip.AddrPort, data []byte) {
	n.mu.Lock()
	r := n.routes[to]
	n.mu.Unlock()
	if r != nil {
		r.receive(from, to, data)
		return
	}
	n.deliver(from, to, data)
}

// deliver hands a datagram to the socket bound to to, if any.
func (n *Network) deliver(from, to netip.AddrPort, data []byte) bool {
	n.mu.Lock()
	c := n.conns[to]
	if c == nil {
		c = n.conns[netip.AddrPortFrom(unspecified(to.Addr()), to.Port())]
	}
	n.mu.Unlock()
	if c == nil {
		return false // as UDP: no one listens, the datagram is gone
	}
	return c.enqueue(from, data)
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
