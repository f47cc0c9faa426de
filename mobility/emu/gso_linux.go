package emu

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux hands runs of equal datagrams through a socket as one buffer:
// UDP_GRO on receive, UDP_SEGMENT (GSO) on send. quic-go sends this way,
// so a relay that keeps the runs whole forwards a run in one system call
// each way, where it would otherwise take one per datagram.

// enableGRO asks the kernel to deliver runs whole; it reports whether the
// kernel agreed.
func enableGRO(c *net.UDPConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil {
		return false
	}
	return serr == nil
}

// oobSize is room for the control messages the relay reads and writes.
const oobSize = 64

// groSegment returns the size of the datagrams of a run from its control
// messages, or 0 if the buffer holds a single datagram.
func groSegment(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(2) {
			return int(binary.NativeEndian.Uint16(oob[unix.CmsgLen(0):]))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}

// gsoOOB writes the control message that makes the kernel cut a buffer
// into datagrams of size bytes, into oob.
func gsoOOB(oob []byte, size int) []byte {
	oob = oob[:unix.CmsgSpace(2)]
	clear(oob)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
	return oob
}
