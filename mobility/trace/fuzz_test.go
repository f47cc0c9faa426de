package trace

import (
	"errors"
	"os"
	"testing"
	"time"
)

// FuzzParse checks that no input panics the parser, that every error is a
// *ParseError with a sensible position, and that whatever parses survives
// a round trip through WriteTo unchanged.
func FuzzParse(f *testing.F) {
	if ref, err := os.ReadFile("testdata/reference.trace"); err == nil {
		f.Add(string(ref))
	}
	for _, name := range Profiles() {
		src, _ := ProfileSource(name)
		f.Add(string(src))
	}
	f.Add(Generate(Model{ServerMoveEvery: Range[time.Duration]{Min: 20 * time.Second, Max: 40 * time.Second}, Duration: 2 * time.Minute}, 7).String())
	for _, s := range []string{
		"", "#", "0 end", "0 link loss=1e-3 reorder=0.5 queue_bytes=0", "1.5 handover outage_ms=.5",
		"0 blackout duration_ms=1000000000", "0 link rtt_ms=999999999.999999", "3 x=y", "0 link ==",
		"0 link loss=1 loss=1", "0\tlink\trtt_ms=1\r", "0 link rate_mbps=1000000.000001",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tr, err := ParseString(src)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			if pe.Line < 1 || pe.Col < 0 || pe.Msg == "" {
				t.Fatalf("bad position in %+v", pe)
			}
			return
		}
		again, err := ParseString(tr.String())
		if err != nil {
			t.Fatalf("re-parsing %q: %v", tr.String(), err)
		}
		if len(again.Events) != len(tr.Events) {
			t.Fatalf("round trip changed the number of events: %d, then %d", len(tr.Events), len(again.Events))
		}
		for i := range tr.Events {
			a, b := tr.Events[i], again.Events[i]
			a.Line, b.Line = 0, 0
			if a != b {
				t.Fatalf("event %d changed in the round trip:\n%+v\n%+v", i, a, b)
			}
		}
	})
}
