package trace_test

import (
	"context"
	"fmt"
	"time"

	"github.com/roamnet/roam/mobility/trace"
)

func ExampleParseString() {
	_, err := trace.ParseString("0 link rtt_ms=60\n1.5 handover outage=120\n")
	fmt.Println(err)
	// Output: trace: line 2, column 14: unknown key "outage" for handover (want outage_ms)
}

func ExampleProfile() {
	tr, _ := trace.Profile("hsr-300")
	handovers := 0
	for _, e := range tr.Events {
		if e.Kind == trace.KindHandover {
			handovers++
		}
	}
	fmt.Println(tr.Duration(), "with", handovers, "handovers")
	// Output: 10m0s with 37 handovers
}

// Generate draws rides from the hsr-300 model; changing a field changes
// the ride.
func ExampleGenerate() {
	m := trace.HSR300()
	m.Duration = time.Minute
	m.SpeedKmh = 350
	tr := trace.Generate(m, 42)
	fmt.Print(tr.Events[0].Kind, " ", tr.Events[len(tr.Events)-1].At)
	// Output: link 1m0s
}

// printer is a trace.Target that prints what it is told.
type printer struct{}

func (p printer) SetLink(l trace.Link)          { fmt.Println("link rtt", l.RTT) }
func (p printer) Handover(outage time.Duration) { fmt.Println("handover", outage) }
func (p printer) Blackout(d time.Duration)      { fmt.Println("blackout", d) }
func (p printer) MoveServer() error             { fmt.Println("server moves"); return nil }

func ExamplePlay() {
	tr, _ := trace.ParseString(`
0.00 link rtt_ms=60
0.01 handover outage_ms=5
0.02 blackout duration_ms=10
0.03 server_move
0.04 end
`)
	err := trace.Play(context.Background(), tr, printer{})
	fmt.Println(err)
	// Output:
	// link rtt 60ms
	// handover 5ms
	// blackout 10ms
	// server moves
	// <nil>
}
