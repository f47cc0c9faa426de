package sal

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
)

// pathSocket wraps the Host's UDP sockets so that a send the kernel
// refuses because the path is gone (the address was deleted, the link went
// down, no route is left) counts as a datagram lost on the way, not as a
// broken socket. quic-go closes a connection on any send error; this way
// the connection lives on, retransmits as after any loss, and a Rebind,
// usually a few milliseconds later, migrates it to a working address.
//
// It embeds *net.UDPConn so that quic-go still finds every capability it
// uses (ECN, GSO, batch reads). gone counts the sends refused so: a Host
// with several paths takes one as a sign that the path failed (see
// watchPath).
type pathSocket struct {
	*net.UDPConn
	gone *atomic.Uint64
}

func wrapSocket(pc net.PacketConn) net.PacketConn {
	if u, ok := pc.(*net.UDPConn); ok {
		return pathSocket{u, new(atomic.Uint64)}
	}
	return pc
}

// sendsRefused returns the counter of sends the kernel refused because
// the path is gone, or nil for a socket that does not count them.
func sendsRefused(pc net.PacketConn) *atomic.Uint64 {
	if s, ok := pc.(pathSocket); ok {
		return s.gone
	}
	return nil
}

func (s pathSocket) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	n, oobn, err := s.UDPConn.WriteMsgUDP(b, oob, addr)
	if isPathGone(err) {
		s.gone.Add(1)
		return len(b), len(oob), nil
	}
	return n, oobn, err
}

func (s pathSocket) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := s.UDPConn.WriteTo(b, addr)
	if isPathGone(err) {
		s.gone.Add(1)
		return len(b), nil
	}
	return n, err
}

func (s pathSocket) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	n, err := s.UDPConn.WriteToUDPAddrPort(b, addr)
	if isPathGone(err) {
		s.gone.Add(1)
		return len(b), nil
	}
	return n, err
}

// isPathGone reports errors that say the path, not the socket, failed.
func isPathGone(err error) bool {
	return err != nil && (errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENETDOWN))
}
