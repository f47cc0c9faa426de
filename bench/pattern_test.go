package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVerifierCountsLossAndDuplication(t *testing.T) {
	stream := make([]byte, 1<<16)
	fillPattern(stream, 0)
	for _, tc := range []struct {
		name      string
		parts     [][]byte
		lost, dup uint64
	}{
		{"whole", [][]byte{stream}, 0, 0},
		{"odd splits", [][]byte{stream[:3], stream[3:11], stream[11:1001], stream[1001:]}, 0, 0},
		{"a hole", [][]byte{stream[:1000], stream[1800:]}, 800, 0},
		{"an unaligned hole", [][]byte{stream[:1003], stream[1808:]}, 805, 0},
		{"a repeat", [][]byte{stream[:2000], stream[1500:]}, 0, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v verifier
			for _, p := range tc.parts {
				v.feed(p)
			}
			require.Equal(t, tc.lost, v.lost, "lost")
			require.Equal(t, tc.dup, v.dup, "duplicated")
			require.LessOrEqual(t, v.corrupt, uint64(16), "bytes before the next word")
			require.Equal(t, uint64(len(stream)), v.pos)
		})
	}
}

func TestFillPatternFromAnyOffset(t *testing.T) {
	whole := make([]byte, 100)
	fillPattern(whole, 0)
	for off := range 20 {
		part := make([]byte, 50)
		fillPattern(part, uint64(off))
		require.Equal(t, whole[off:off+50], part)
	}
}
