package emu

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// defaultReadBuffer is a socket's receive buffer until SetReadBuffer
// changes it, in bytes, as net.core.rmem_default is on Linux.
const defaultReadBuffer = 4 << 20

// PacketConn is a UDP-like socket of an in-memory Network. It implements
// net.PacketConn; its addresses are *net.UDPAddr. Writes never block:
// like UDP, a datagram that finds no receiver, or a full receive buffer,
// is lost. It is safe for concurrent use.
type PacketConn struct {
	nw    *Network
	local netip.AddrPort // as bound; may be unspecified
	src   netip.AddrPort // the source address of what it sends
	done  chan struct{}  // closed by Close
	ready chan struct{}  // holds a token while datagrams wait

	mu       sync.Mutex
	queue    []datagram
	queued   int // bytes in queue
	limit    int // receive buffer in bytes
	overflow uint64
	closed   bool
	rd, wd   deadline
}

type datagram struct {
	from netip.AddrPort
	data []byte
}

func newPacketConn(nw *Network, local netip.AddrPort) *PacketConn {
	src := local
	if local.Addr().IsUnspecified() {
		// A socket bound to every address speaks from loopback, as if
		// all hosts of the network shared one machine.
		lo := netip.IPv6Loopback()
		if local.Addr().Is4() {
			lo = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		src = netip.AddrPortFrom(lo, local.Port())
	}
	return &PacketConn{
		nw:    nw,
		local: local,
		src:   src,
		done:  make(chan struct{}),
		ready: make(chan struct{}, 1),
		limit: defaultReadBuffer,
	}
}

// enqueue hands the conn a datagram it received; data becomes the conn's.
func (c *PacketConn) enqueue(from netip.AddrPort, data []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.queued+len(data) > c.limit {
		c.overflow++
		return false
	}
	c.queue = append(c.queue, datagram{from, data})
	c.queued += len(data)
	select {
	case c.ready <- struct{}{}:
	default:
	}
	return true
}

// ReadFrom reads a datagram; see ReadFromUDPAddrPort.
func (c *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// ReadFromUDPAddrPort reads the next datagram into b and returns its
// size and sender. As with UDP, the part of a datagram that does not fit
// in b is lost. It blocks until a datagram arrives, the read deadline
// passes (an error wrapping os.ErrDeadlineExceeded) or the conn is closed
// (an error wrapping net.ErrClosed).
func (c *PacketConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return 0, netip.AddrPort{}, c.opError("read", nil, net.ErrClosed)
		case c.rd.expired():
			c.mu.Unlock()
			return 0, netip.AddrPort{}, c.opError("read", nil, os.ErrDeadlineExceeded)
		case len(c.queue) > 0:
			d := c.queue[0]
			c.queue[0] = datagram{}
			c.queue = c.queue[1:]
			c.queued -= len(d.data)
			if len(c.queue) > 0 {
				select { // pass the token on to the next reader
				case c.ready <- struct{}{}:
				default:
				}
			}
			c.mu.Unlock()
			return copy(b, d.data), d.from, nil
		}
		changed := c.rd.wait()
		c.mu.Unlock()
		select {
		case <-c.ready:
		case <-c.done:
		case <-changed:
		}
	}
}

// WriteTo sends a datagram to addr, which must be a *net.UDPAddr or an
// address that netip.ParseAddrPort reads.
func (c *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var to netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		to = a.AddrPort()
	case nil:
		return 0, c.opError("write", nil, errMissingAddress)
	default:
		var err error
		if to, err = netip.ParseAddrPort(addr.String()); err != nil {
			return 0, c.opError("write", addr, err)
		}
	}
	return c.WriteToUDPAddrPort(b, to)
}

// WriteToUDPAddrPort sends a datagram to addr. It never blocks.
func (c *PacketConn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	c.mu.Lock()
	closed, expired := c.closed, c.wd.expired()
	c.mu.Unlock()
	if closed {
		return 0, c.opError("write", net.UDPAddrFromAddrPort(addr), net.ErrClosed)
	}
	if expired {
		return 0, c.opError("write", net.UDPAddrFromAddrPort(addr), os.ErrDeadlineExceeded)
	}
	if len(b) > maxDatagram {
		return 0, c.opError("write", net.UDPAddrFromAddrPort(addr), errMessageTooLong)
	}
	c.nw.send(c.src, unmap(addr), append([]byte(nil), b...))
	return len(b), nil
}

// Close closes the conn and unblocks its readers. Closing twice is
// harmless.
func (c *PacketConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.queue, c.queued = nil, 0
	c.rd.stop()
	c.wd.stop()
	close(c.done)
	c.mu.Unlock()
	c.nw.unbind(c)
	return nil
}

// LocalAddr returns the address the conn is bound to, a *net.UDPAddr.
func (c *PacketConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.local) }

// AddrPort returns the address the conn is bound to.
func (c *PacketConn) AddrPort() netip.AddrPort { return c.local }

// SetDeadline sets both the read and the write deadline.
func (c *PacketConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline sets the time after which reads fail with an error
// wrapping os.ErrDeadlineExceeded, including reads already blocked. The
// zero time means no deadline.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd.set(t)
	return nil
}

// SetWriteDeadline sets the time after which writes fail.
func (c *PacketConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wd.set(t)
	return nil
}

// SetReadBuffer sets the receive buffer in bytes, as on a UDP socket:
// datagrams that arrive when it is full are lost.
func (c *PacketConn) SetReadBuffer(bytes int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limit = max(bytes, 1)
	return nil
}

// SetWriteBuffer does nothing; writes never wait. It exists because
// quic-go warns about sockets without it.
func (c *PacketConn) SetWriteBuffer(int) error { return nil }

// Overflows returns how many datagrams arrived to a full receive buffer.
func (c *PacketConn) Overflows() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.overflow
}

func (c *PacketConn) opError(op string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: c.LocalAddr(), Addr: addr, Err: err}
}

// deadline is a settable deadline with a channel that is closed when it
// passes. Its owner's mutex guards it; only its timer closes the channel
// without the mutex, so the channel has one closer at a time.
type deadline struct {
	t     time.Time
	timer *time.Timer
	ch    chan struct{} // nil until waited on
}

func (d *deadline) expired() bool { return !d.t.IsZero() && !time.Now().Before(d.t) }

// set moves the deadline and wakes those waiting on the old one, so that
// they look at the new one.
func (d *deadline) set(t time.Time) {
	if d.ch != nil && (d.timer == nil || d.timer.Stop()) {
		close(d.ch) // no timer will close it now
	}
	// If Stop failed, the timer has closed the channel or is about to.
	d.timer, d.ch, d.t = nil, nil, t
}

// wait returns a channel that is closed when the deadline passes or
// changes.
func (d *deadline) wait() <-chan struct{} {
	if d.ch == nil {
		ch := make(chan struct{})
		d.ch = ch
		if !d.t.IsZero() {
			d.timer = time.AfterFunc(time.Until(d.t), func() { close(ch) })
		}
	}
	return d.ch
}

// stop releases the timer when the conn closes; the conn's done channel
// wakes the waiters.
func (d *deadline) stop() {
	if d.timer != nil {
		d.timer.Stop()
	}
	d.timer, d.ch = nil, nil
}
