package sal

import (
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// A migration abandons its path probe after three PTOs (RFC 9000 8.2.4),
// within a floor and a ceiling, rather than after a fixed 4 s: a probe
// stuck behind a full congestion window on a dead path otherwise stalls
// every flow of the connection that long.
func TestProbeTimeout(t *testing.T) {
	h := &Host{}
	for _, tt := range []struct {
		srtt, dev, want time.Duration
	}{
		{75 * time.Millisecond, 10 * time.Millisecond, 3 * (75 + 40 + 25) * time.Millisecond},
		{time.Millisecond, 0, 150 * time.Millisecond},               // loopback: the floor
		{3 * time.Second, time.Second, 2 * h.cfg.endpointTimeout()}, // a terrible path: the ceiling
	} {
		got := h.probeTimeout(quic.ConnectionStats{SmoothedRTT: tt.srtt, MeanDeviation: tt.dev})
		require.Equal(t, tt.want, got, "srtt %v, deviation %v", tt.srtt, tt.dev)
	}
}
