package trace

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHSR300DualFilesMatchModel keeps the shipped hsr-300-dual profile
// and the generator in step, as TestHSR300FileMatchesModel does for
// hsr-300; -update rewrites the files' events.
func TestHSR300DualFilesMatchModel(t *testing.T) {
	want := GenerateMulti(MultiModel{}, HSR300DualSeed)
	require.Len(t, want, 2)
	if *update {
		for i, tr := range want {
			name := filepath.Join("profiles", "hsr-300-dual", string(rune('a'+i))+".trace")
			src, err := os.ReadFile(name)
			require.NoError(t, err)
			var header strings.Builder
			for _, line := range strings.SplitAfter(string(src), "\n") {
				if !strings.HasPrefix(line, "#") {
					break
				}
				header.WriteString(line)
			}
			require.NoError(t, os.WriteFile(name, []byte(header.String()+tr.String()), 0o644))
		}
	}
	got, err := MultiProfile("hsr-300-dual")
	require.NoError(t, err)
	require.Len(t, got, 2)
	for i := range got {
		require.Equal(t, stripLines(want[i]), stripLines(got[i]), "carrier %d differs from the model; see the test's comment", i)
	}
	require.Equal(t, []string{"hsr-300-dual"}, MultiProfiles())
	require.Equal(t, []string{"hsr-300", "wired"}, Profiles(), "multi-carrier profiles are not single ones")
	_, err = MultiProfile("nope")
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestGenerateMultiDeterministic(t *testing.T) {
	a, b := GenerateMulti(MultiModel{}, 1), GenerateMulti(MultiModel{}, 1)
	require.Equal(t, a, b)
	require.NotEqual(t, a, GenerateMulti(MultiModel{}, 2))
	require.Equal(t, HSR300Dual(), MultiModel{Model: HSR300(), Carriers: 2, Separation: time.Second})
	three := GenerateMulti(MultiModel{Carriers: 3}, 1)
	require.Len(t, three, 3)
	require.Equal(t, blackouts(a[0]), blackouts(three[2]), "the number of carriers leaves the tunnels alone")
}

func blackouts(tr *Trace) []Event {
	var out []Event
	for _, e := range tr.Events {
		if e.Kind == KindBlackout {
			out = append(out, e)
		}
	}
	return out
}

// TestGenerateMultiFollowsModel checks, over a long ride, that each
// carrier has hsr-300's figures, that the carriers never hand over
// together, and that the tunnels cut all of them.
func TestGenerateMultiFollowsModel(t *testing.T) {
	m := HSR300Dual()
	m.Duration = 6 * time.Hour
	m.Carriers = 3
	m.ServerMoveEvery = Range[time.Duration]{Min: 10 * time.Minute, Max: 20 * time.Minute}
	trs := GenerateMulti(m, 99)
	require.Len(t, trs, 3)
	tunnels := blackouts(trs[0])
	require.Greater(t, len(tunnels), 6*60/4-10)
	type span struct {
		carrier    int
		start, end time.Duration
	}
	var outages []span
	for c, tr := range trs {
		require.Equal(t, tunnels, blackouts(tr), "carrier %d: a tunnel cuts every carrier", c)
		require.Equal(t, m.Duration, tr.Duration())
		var prev, lastHO time.Duration
		var handovers, moves int
		lastHO = -1
		for _, e := range tr.Events {
			require.GreaterOrEqual(t, e.At, prev, "time goes backwards")
			prev = e.At
			switch e.Kind {
			case KindLink:
				require.True(t, e.Link.RTT >= m.RTT.Min && e.Link.RTT <= m.RTT.Max, "rtt %v", e.Link.RTT)
				require.True(t, e.Link.Loss >= m.Loss.Min && e.Link.Loss <= m.Loss.Max, "loss %v", e.Link.Loss)
			case KindHandover:
				handovers++
				require.True(t, e.Duration >= m.Outage.Min && e.Duration <= m.Outage.Max, "outage %v", e.Duration)
				for _, tn := range tunnels {
					require.False(t, e.At >= tn.At && e.At < tn.At+tn.Duration, "a handover inside a tunnel at %v", e.At)
				}
				if lastHO >= 0 {
					require.Greater(t, e.At-lastHO, time.Duration(0))
				}
				lastHO = e.At
				outages = append(outages, span{c, e.At, e.At + e.Duration})
			case KindServerMove:
				moves++
			}
		}
		// hsr-300's rate: a handover every 12–19 s, a few more lost to
		// the pushes and the tunnels' time.
		require.InDelta(t, 6*3600/16.0, float64(handovers), 6*3600/16.0*0.25, "carrier %d", c)
		if c == 0 {
			require.Greater(t, moves, 15)
		} else {
			require.Zero(t, moves, "server moves are in the first trace only")
		}
	}
	for i, a := range outages {
		for _, b := range outages[i+1:] {
			if a.carrier == b.carrier {
				continue
			}
			apart := a.start >= b.end+m.Separation || b.start >= a.end+m.Separation
			require.True(t, apart, "carriers %d and %d hand over together: %v and %v", a.carrier, b.carrier, a, b)
		}
	}
}
