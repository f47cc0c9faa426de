package main

import (
	"encoding/binary"
	"net/netip"
	"sync"
)

// natTable is the kernel path's NAT in front of the client: it maps each
// client (address, port) to an outside port, in the IPv4 packets of TCP
// and UDP. Until the first rebinding it maps every port to itself; each
// rebinding forgets every mapping, so the server sees the next packet of
// every flow from a new port and answers the old ports' packets with
// nothing (they are dropped), as a NAT whose state expired.
type natTable struct {
	mu       sync.Mutex
	out      map[natKey]uint16 // client side → outside port
	in       map[natKey]uint16 // (client address, outside port) → client port
	rebound  bool
	nextPort uint16
}

type natKey struct {
	addr  netip.Addr
	proto byte
	port  uint16
}

// rebind forgets every mapping.
func (n *natTable) rebind() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.out, n.in, n.rebound = map[natKey]uint16{}, map[natKey]uint16{}, true
	if n.nextPort < 20000 {
		n.nextPort = 20000
	}
}

// ipv4 header fields the NAT and the forwarder read.
func ipv4Header(p []byte) (ihl int, proto byte, src, dst netip.Addr, ok bool) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return 0, 0, netip.Addr{}, netip.Addr{}, false
	}
	ihl = int(p[0]&0x0f) * 4
	if ihl < 20 || len(p) < ihl+8 {
		return 0, 0, netip.Addr{}, netip.Addr{}, false
	}
	return ihl, p[9], netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), true
}

// translateUp rewrites the source port of a packet from the client; it
// reports false if the packet is to be dropped.
func (n *natTable) translateUp(p []byte) bool {
	ihl, proto, src, _, ok := ipv4Header(p)
	if !ok {
		return false
	}
	if proto != 6 && proto != 17 {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.rebound {
		return true
	}
	sport := binary.BigEndian.Uint16(p[ihl:])
	k := natKey{src, proto, sport}
	ext, ok := n.out[k]
	if !ok {
		n.nextPort++
		if n.nextPort < 20000 {
			n.nextPort = 20000
		}
		ext = n.nextPort
		n.out[k] = ext
		n.in[natKey{src, proto, ext}] = sport
	}
	setPort(p, ihl, proto, 0, ext)
	return true
}

// translateDown rewrites the destination port of a packet to the client
// back; it reports false if no mapping has that port.
func (n *natTable) translateDown(p []byte) bool {
	ihl, proto, _, dst, ok := ipv4Header(p)
	if !ok {
		return false
	}
	if proto != 6 && proto != 17 {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.rebound {
		return true
	}
	dport := binary.BigEndian.Uint16(p[ihl+2:])
	port, ok := n.in[natKey{dst, proto, dport}]
	if !ok {
		return false
	}
	setPort(p, ihl, proto, 2, port)
	return true
}

// setPort writes port at offset at (0 source, 2 destination) of the
// transport header and updates its checksum incrementally (RFC 1624).
func setPort(p []byte, ihl int, proto byte, at int, port uint16) {
	old := binary.BigEndian.Uint16(p[ihl+at:])
	binary.BigEndian.PutUint16(p[ihl+at:], port)
	sum := ihl + 16 // TCP
	if proto == 17 {
		sum = ihl + 6
		if binary.BigEndian.Uint16(p[sum:]) == 0 {
			return // no UDP checksum
		}
	}
	if len(p) < sum+2 {
		return
	}
	c := uint32(^binary.BigEndian.Uint16(p[sum:])) + uint32(^old) + uint32(port)
	c = (c & 0xffff) + c>>16
	c = (c & 0xffff) + c>>16
	binary.BigEndian.PutUint16(p[sum:], ^uint16(c))
}
