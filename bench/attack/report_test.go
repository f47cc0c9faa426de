package main

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The report fails a run on what CI can rely on (an honest failure, the
// heap cap, no recovery) and only notes throughput, which a loaded
// machine moves.
func TestReportVerdicts(t *testing.T) {
	o := &options{duration: time.Second, calm: time.Second, maxHeap: 256 << 20}
	calm := honestStats{ok: 100, elapsed: time.Second}
	ok := result{
		attack: attack{name: "fine"}, calm: calm,
		during: honestStats{ok: 60, elapsed: time.Second},
		base:   sample{goroutines: 10, heapLive: 1 << 20}, peak: sample{goroutines: 50, heapLive: 20 << 20},
		after: sample{goroutines: 10, heapLive: 1 << 20}, recoveredOK: true, recovered: time.Second,
	}
	slow := ok
	slow.attack.name, slow.during.ok = "slow", 10
	held := ok
	held.attack = attack{name: "held", holds: "names"}
	held.recoveredOK = false

	var out strings.Builder
	require.False(t, report(&out, "registry", []result{ok, slow, held}, o))
	require.Contains(t, out.String(), "| fine |")
	require.Contains(t, out.String(), "**slow** missed: honest throughput 10% of calm (target 50%)")
	require.Contains(t, out.String(), "holds names")

	for _, bad := range []func(*result){
		func(r *result) { r.during.failed, r.during.firstErr = 1, errors.New("refused") },
		func(r *result) { r.peak.heapLive = 300 << 20 },
		func(r *result) { r.recoveredOK = false },
		func(r *result) { r.outcome.missed = "crashed provider answered for 9 s" },
	} {
		r := ok
		bad(&r)
		out.Reset()
		require.True(t, report(&out, "registry", []result{r}, o), out.String())
	}
}

// A fake Initial is what quic-go takes for a new connection: a long
// header Initial of version 1, with a connection ID of 16 bytes and a
// length that matches the packet.
func TestFakeInitial(t *testing.T) {
	p := fakeInitial(make([]byte, 1200))
	require.Len(t, p, 1200)
	require.Equal(t, byte(0xc0), p[0]&0xf0, "long header, Initial")
	require.Equal(t, uint32(1), binary.BigEndian.Uint32(p[1:]))
	require.Equal(t, byte(16), p[5])
	require.Equal(t, byte(8), p[22])
	require.Equal(t, byte(0), p[31], "no token")
	require.Equal(t, len(p)-34, int(binary.BigEndian.Uint16(p[32:])&0x3fff))
}
