package trace

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sharedReference is roam's reference trace, outside the module; the
// testdata copy stands in where the shared folder is absent.
const sharedReference = "../../../shared/traces/reference.trace"

func TestReferenceTrace(t *testing.T) {
	tr, err := ParseFile("testdata/reference.trace")
	require.NoError(t, err)
	require.Len(t, tr.Events, 18)
	require.Equal(t, 120*time.Second, tr.Duration())

	first := tr.Events[0]
	require.Equal(t, KindLink, first.Kind)
	require.Equal(t, Link{RTT: 60 * time.Millisecond, Jitter: 8 * time.Millisecond, Loss: 0.005, Rate: 20_000_000}, first.Link)
	require.Equal(t, FieldRTT|FieldJitter|FieldLoss|FieldRate, first.Set)

	ho := tr.Events[1]
	require.Equal(t, Event{At: 14483 * time.Millisecond, Kind: KindHandover, Duration: 120 * time.Millisecond, Line: 8}, ho)

	var kinds []Kind
	for _, e := range tr.Events {
		kinds = append(kinds, e.Kind)
	}
	require.Contains(t, kinds, KindBlackout)
	require.Contains(t, kinds, KindServerMove)
	require.Equal(t, KindEnd, kinds[len(kinds)-1])

	if want, err := os.ReadFile(sharedReference); err == nil {
		got, err := os.ReadFile("testdata/reference.trace")
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "testdata/reference.trace is stale; copy %s", sharedReference)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		line, col int
		msg       string
	}{
		{"bad time", "x link rtt_ms=1", 1, 1, `expected a time in seconds from the start, like 12.5, got "x"`},
		{"negative time", "-1 end", 1, 1, "expected a time in seconds"},
		{"exponent time", "1e3 end", 1, 1, "expected a time in seconds"},
		{"trailing dot", "1. end", 1, 1, "expected a time in seconds"},
		{"too precise", "1.0000000001 end", 1, 1, "expected a time in seconds"},
		{"too late", "1000001 end", 1, 1, "expected a time in seconds"},
		{"backwards", "2 link loss=0\n1 end", 2, 1, "time 1 goes backwards (the previous event is at 2.000)"},
		{"no event", "# hi\n\n  3.5   # only a time", 3, 0, "expected an event after the time"},
		{"unknown event", "0 teleport", 1, 3, `unknown event "teleport" (want link, handover, blackout, server_move or end)`},
		{"empty link", "0 link", 1, 0, "link needs at least one of rtt_ms, jitter_ms, loss, rate_mbps"},
		{"unknown key", "0 link rtt=5", 1, 8, `unknown key "rtt" for link (want rtt_ms, jitter_ms,`},
		{"not kv", "0 link rtt_ms", 1, 8, `expected key=value, got "rtt_ms"`},
		{"empty value", "0 link rtt_ms=", 1, 8, `expected key=value, got "rtt_ms="`},
		{"duplicate key", "0 link loss=0.1 loss=0.2", 1, 17, "loss given twice"},
		{"bad ms", "0 link rtt_ms=ten", 1, 15, `rtt_ms: expected a non-negative number of milliseconds, like 40 or 12.5, got "ten"`},
		{"negative ms", "0 link jitter_ms=-1", 1, 18, "jitter_ms: expected a non-negative number"},
		{"loss above 1", "0 link loss=1.5", 1, 13, `loss: expected a probability from 0 to 1, like 0.01, got "1.5"`},
		{"loss NaN", "0 link loss=NaN", 1, 13, "loss: expected a probability"},
		{"loss hex", "0 link loss=0x1p-2", 1, 13, "loss: expected a probability"},
		{"bad rate", "0 link rate_mbps=fast", 1, 18, "rate_mbps: expected a rate in Mbit/s"},
		{"fractional queue", "0 link queue_bytes=1.5", 1, 20, "queue_bytes: expected a whole number of bytes"},
		{"handover key", "0 handover duration_ms=5", 1, 12, `unknown key "duration_ms" for handover (want outage_ms)`},
		{"handover value", "0 handover outage_ms=-5", 1, 22, "outage_ms: expected a non-negative number of milliseconds"},
		{"blackout needs duration", "0 blackout", 1, 0, "blackout needs duration_ms"},
		{"blackout twice", "0 blackout duration_ms=1 duration_ms=2", 1, 26, "duration_ms given twice"},
		{"server_move field", "0 server_move to=x", 1, 15, `server_move takes no fields, got "to=x"`},
		{"after end", "0 end\n1 link loss=0", 2, 1, "event after end"},
		{"long line", "0 link loss=0 " + strings.Repeat(" ", maxLineSize), 1, 0, "line is too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseString(tc.src)
			require.Error(t, err)
			require.ErrorIs(t, err, ErrSyntax)
			var pe *ParseError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, tc.line, pe.Line, "line")
			require.Equal(t, tc.col, pe.Col, "column")
			require.Contains(t, pe.Msg, tc.msg)
			require.True(t, strings.HasPrefix(err.Error(), "trace: line "), err.Error())
		})
	}
}

func TestParseErrorNamesFile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "bad.trace")
	require.NoError(t, os.WriteFile(name, []byte("0 link rtt_ms=1\n0.5 warp\n"), 0o644))
	_, err := ParseFile(name)
	require.EqualError(t, err, `trace: bad.trace: line 2, column 5: unknown event "warp" (want link, handover, blackout, server_move or end)`)
}

func TestParseAccepts(t *testing.T) {
	tr, err := ParseString("\r\n" +
		"  .5\tlink  rtt_ms=0.25 queue_bytes=1500 burst_enter=1e-3 burst_exit=0.3 burst_loss=1 reorder=0 # tabs, CRs\r\n" +
		"0.5 handover\n" +
		"0.5 handover outage_ms=0\n" +
		"3 server_move\n")
	require.NoError(t, err)
	require.Len(t, tr.Events, 4)
	l := tr.Events[0]
	require.Equal(t, 500*time.Millisecond, l.At)
	require.Equal(t, Link{RTT: 250 * time.Microsecond, QueueBytes: 1500, BurstEnter: 0.001, BurstExit: 0.3, BurstLoss: 1}, l.Link)
	require.Equal(t, FieldRTT|FieldQueue|FieldBurstEnter|FieldBurstExit|FieldBurstLoss|FieldReorder, l.Set)
	require.Equal(t, time.Duration(0), tr.Events[1].Duration)
	require.Equal(t, 3*time.Second, tr.Duration(), "without end, the last event's time")
}

func TestParseIsExact(t *testing.T) {
	// Through float64, 0.3 s becomes 299.999999 ms; read as decimals it stays exact.
	tr, err := ParseString("0.3 link rtt_ms=0.000001 rate_mbps=0.000001\n")
	require.NoError(t, err)
	require.Equal(t, 300*time.Millisecond, tr.Events[0].At)
	require.Equal(t, time.Nanosecond, tr.Events[0].Link.RTT)
	require.Equal(t, int64(1), tr.Events[0].Link.Rate)
}

func TestLinkApply(t *testing.T) {
	tr, err := ParseString("0 link rtt_ms=60 jitter_ms=8 loss=0.005 rate_mbps=20\n1 link loss=0.02\n2 end\n")
	require.NoError(t, err)
	var l Link
	for _, e := range tr.Events {
		l = l.Apply(e)
	}
	require.Equal(t, Link{RTT: 60 * time.Millisecond, Jitter: 8 * time.Millisecond, Loss: 0.02, Rate: 20e6}, l)
}

func TestRoundTrip(t *testing.T) {
	for _, name := range append(Profiles(), "reference") {
		t.Run(name, func(t *testing.T) {
			var tr *Trace
			var err error
			if name == "reference" {
				tr, err = ParseFile("testdata/reference.trace")
			} else {
				tr, err = Profile(name)
			}
			require.NoError(t, err)
			again, err := ParseString(tr.String())
			require.NoError(t, err)
			require.Equal(t, stripLines(tr), stripLines(again))
		})
	}
}

func TestProfiles(t *testing.T) {
	require.Equal(t, []string{"hsr-300", "wired"}, Profiles())
	_, err := Profile("maglev")
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "have hsr-300, wired")
	_, err = ProfileSource("wired")
	require.NoError(t, err)
}

func TestKindString(t *testing.T) {
	require.Equal(t, "server_move", KindServerMove.String())
	require.Equal(t, "Kind(42)", Kind(42).String())
}

func stripLines(tr *Trace) *Trace {
	out := &Trace{Events: append([]Event(nil), tr.Events...)}
	for i := range out.Events {
		out.Events[i].Line = 0
	}
	return out
}

func TestParseReadError(t *testing.T) {
	_, err := Parse(errReader{})
	require.ErrorIs(t, err, errBoom)
	require.NotErrorIs(t, err, ErrSyntax)
}

var errBoom = errors.New("boom")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBoom }
