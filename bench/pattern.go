package main

import "encoding/binary"

// The bytes of every stream `go run ./bench` sends are a function of
// their offset: the 8-byte word at offset o (a multiple of 8) is
// o^patternKey, little-endian. So the receiver checks each byte against
// its position, and when a byte is wrong it finds where in the stream it
// really is from the next whole word, which names its own offset: a jump
// forward is bytes lost, a jump back bytes duplicated (a reordering is
// both). The key keeps words from looking like the small integers of
// zeroed or stale buffers.
const patternKey = 0x9e3779b97f4a7c15

// fillPattern puts the stream's bytes from offset off into b.
func fillPattern(b []byte, off uint64) {
	i := 0
	for ; i < len(b) && off&7 != 0; i, off = i+1, off+1 {
		b[i] = patternByte(off)
	}
	for ; i+8 <= len(b); i, off = i+8, off+8 {
		binary.LittleEndian.PutUint64(b[i:], off^patternKey)
	}
	for ; i < len(b); i, off = i+1, off+1 {
		b[i] = patternByte(off)
	}
}

func patternByte(off uint64) byte { return byte((off&^7 ^ patternKey) >> (8 * (off & 7))) }

// verifier checks a stream against the pattern as it arrives.
type verifier struct {
	pos      uint64 // the offset the next byte should have
	lost     uint64 // bytes skipped
	dup      uint64 // bytes that came again
	corrupt  uint64 // bytes that fit nowhere: neither the pattern at pos nor a word found after them
	lostSync bool   // a mismatch was seen and no word has placed the stream again yet
}

// feed checks p, the bytes that followed the ones fed before.
func (v *verifier) feed(p []byte) {
	i := 0
	for i < len(p) {
		if v.lostSync {
			j, at, ok := findWord(p[i:], v.pos)
			if !ok {
				// No whole word in what is left: count it, and look again
				// in the next read.
				v.corrupt += uint64(len(p) - i)
				v.pos += uint64(len(p) - i)
				return
			}
			v.corrupt += uint64(j)
			v.pos += uint64(j)
			v.place(at)
			i += j
			v.lostSync = false
			continue
		}
		if v.pos&7 == 0 && len(p)-i >= 8 {
			if binary.LittleEndian.Uint64(p[i:]) == v.pos^patternKey {
				i, v.pos = i+8, v.pos+8
				continue
			}
		} else if p[i] == patternByte(v.pos) {
			i, v.pos = i+1, v.pos+1
			continue
		}
		v.lostSync = true
	}
}

// place records that the byte expected at v.pos is really at offset at.
func (v *verifier) place(at uint64) {
	if at > v.pos {
		v.lost += at - v.pos
	} else {
		v.dup += v.pos - at
	}
	v.pos = at
}

// findWord returns the first index j in p where a word of the pattern
// starts whose offset lies within 1 GiB of near+j: where the stream is
// really at.
func findWord(p []byte, near uint64) (j int, at uint64, ok bool) {
	const window = 1 << 30
	for j = 0; j+8 <= len(p); j++ {
		o := binary.LittleEndian.Uint64(p[j:]) ^ patternKey
		want := near + uint64(j)
		if o&7 == 0 && o+window > want && o < want+window {
			return j, o, true
		}
	}
	return 0, 0, false
}
