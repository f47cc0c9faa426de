package trace

import (
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite profiles/hsr-300.trace's events from the generator")

// TestHSR300FileMatchesModel keeps the shipped profile and the generator in
// step: the file's events are Generate(Model{}, HSR300Seed). After a
// deliberate change to the model, run go test -run HSR300File -update.
func TestHSR300FileMatchesModel(t *testing.T) {
	const name = "profiles/hsr-300.trace"
	want := Generate(Model{}, HSR300Seed)
	if *update {
		src, err := os.ReadFile(name)
		require.NoError(t, err)
		var header strings.Builder
		for _, line := range strings.SplitAfter(string(src), "\n") {
			if !strings.HasPrefix(line, "#") {
				break
			}
			header.WriteString(line)
		}
		require.NoError(t, os.WriteFile(name, []byte(header.String()+want.String()), 0o644))
	}
	got, err := Profile("hsr-300")
	require.NoError(t, err)
	require.Equal(t, stripLines(want), stripLines(got), "the file differs from the model; see the test's comment")
}

func TestGenerateDeterministic(t *testing.T) {
	a, b := Generate(Model{}, 1), Generate(Model{}, 1)
	require.Equal(t, a, b)
	require.NotEqual(t, a, Generate(Model{}, 2))
}

// TestGenerateFollowsModel checks the generated figures against the
// model's ranges over a long ride.
func TestGenerateFollowsModel(t *testing.T) {
	m := HSR300()
	m.Duration = 6 * time.Hour
	tr := Generate(m, 99)
	require.Equal(t, KindEnd, tr.Events[len(tr.Events)-1].Kind)
	require.Equal(t, m.Duration, tr.Duration())

	minDwell := time.Duration(m.CellSpacing.Min / (m.SpeedKmh / 3.6) * float64(time.Second)).Round(time.Millisecond)
	var handovers, tunnels int
	var tunnelTime time.Duration
	var lastHO time.Duration = -1
	var prev time.Duration
	for _, e := range tr.Events {
		require.GreaterOrEqual(t, e.At, prev, "time goes backwards")
		prev = e.At
		switch e.Kind {
		case KindLink:
			l := e.Link
			require.True(t, l.RTT >= m.RTT.Min && l.RTT <= m.RTT.Max, "rtt %v", l.RTT)
			require.InDelta(t, float64(l.RTT)*m.Jitter, float64(l.Jitter), float64(time.Millisecond))
			require.True(t, l.Loss >= m.Loss.Min && l.Loss <= m.Loss.Max, "loss %v", l.Loss)
			require.True(t, l.Rate >= int64(m.RateMbps.Min*1e6) && l.Rate <= int64(m.RateMbps.Max*1e6), "rate %v", l.Rate)
		case KindHandover:
			handovers++
			require.True(t, e.Duration >= m.Outage.Min && e.Duration <= m.Outage.Max, "outage %v", e.Duration)
			if lastHO >= 0 {
				require.GreaterOrEqual(t, e.At-lastHO, minDwell)
			}
			lastHO = e.At
		case KindBlackout:
			tunnels++
			tunnelTime += e.Duration
			require.True(t, e.Duration >= m.TunnelLength.Min && e.Duration <= m.TunnelLength.Max, "tunnel %v", e.Duration)
		case KindServerMove:
			t.Fatal("server moves are off by default")
		}
	}
	// Six hours at 12–19 s per cell and 1–4 min between tunnels.
	require.InDelta(t, 6*3600/16.0, float64(handovers), 6*3600/16.0*0.2)
	require.Greater(t, tunnels, 6*60/4-10)
	require.Less(t, tunnels, 6*60/1)
	t.Logf("6 h: %d handovers, %d tunnels totalling %v", handovers, tunnels, tunnelTime)
}

func TestGenerateServerMovesAndOff(t *testing.T) {
	tr := Generate(Model{
		Duration:        10 * time.Minute,
		TunnelEvery:     Range[time.Duration]{Min: -1},
		ServerMoveEvery: Range[time.Duration]{Min: time.Minute, Max: time.Minute},
	}, 5)
	var moves int
	for _, e := range tr.Events {
		require.NotEqual(t, KindBlackout, e.Kind)
		if e.Kind == KindServerMove {
			moves++
		}
	}
	require.InDelta(t, 9, moves, 1)
}
