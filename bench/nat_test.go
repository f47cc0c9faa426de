package main

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// checksum computes a TCP checksum over the IPv4 pseudo-header and segment.
func checksum(p []byte) uint16 {
	ihl := int(p[0]&0x0f) * 4
	seg := p[ihl:]
	var s uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	add(p[12:20])
	s += 6 + uint32(len(seg))
	add(seg)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func TestNATRewritesPortsAndChecksums(t *testing.T) {
	p := make([]byte, 20+20+5)
	p[0], p[9] = 0x45, 6
	copy(p[12:], []byte{10, 201, 1, 1, 10, 201, 0, 1})
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 5000)
	copy(p[40:], "hello")
	binary.BigEndian.PutUint16(p[36:], checksum(p))
	require.Equal(t, uint16(0), checksum(p), "a packet with its checksum set sums to zero")

	var n natTable
	require.True(t, n.translateUp(p))
	require.Equal(t, uint16(40000), binary.BigEndian.Uint16(p[20:]), "no rewriting before a rebinding")
	n.rebind()
	require.True(t, n.translateUp(p))
	ext := binary.BigEndian.Uint16(p[20:])
	require.NotEqual(t, uint16(40000), ext)
	binary.BigEndian.PutUint16(p[36:], 0)
	want := checksum(p)
	require.True(t, n.translateDown(reply(p)), "a reply to the mapping passes")

	q := append([]byte(nil), p...)
	binary.BigEndian.PutUint16(q[20:], 40000)
	binary.BigEndian.PutUint16(q[36:], checksum(q))
	require.True(t, n.translateUp(q))
	require.Equal(t, ext, binary.BigEndian.Uint16(q[20:]))
	got := binary.BigEndian.Uint16(q[36:])
	require.Equal(t, want, got, "the incremental checksum matches a full one")

	n.rebind()
	require.False(t, n.translateDown(reply(q)), "the old mapping is gone")
}

// reply swaps addresses and ports.
func reply(p []byte) []byte {
	r := append([]byte(nil), p...)
	copy(r[12:16], p[16:20])
	copy(r[16:20], p[12:16])
	copy(r[20:22], p[22:24])
	copy(r[22:24], p[20:22])
	return r
}
