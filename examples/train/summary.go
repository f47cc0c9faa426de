package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// summary is what a ride measured; -json prints it as one object.
type summary struct {
	Trace       string  `json:"trace"`
	Seed        uint64  `json:"seed"`
	DurationS   float64 `json:"duration_s"`  // the ride, from the flow's start; the drain is not in it
	Interrupted bool    `json:"interrupted"` // ended early by a signal

	// Every byte the applications read was checked against its offset.
	// Lost counts bytes a Write accepted that never came; duplicated,
	// bytes that came twice; reordered, bytes that came after later ones;
	// corrupt, bytes that fit nowhere.
	BytesVerified   uint64   `json:"bytes_verified"`
	BytesDown       uint64   `json:"bytes_down"` // the service's stream to the train
	BytesUp         uint64   `json:"bytes_up"`   // the train's telemetry
	BytesLost       uint64   `json:"bytes_lost"`
	BytesDuplicated uint64   `json:"bytes_duplicated"`
	BytesReordered  uint64   `json:"bytes_reordered"`
	BytesCorrupt    uint64   `json:"bytes_corrupt"`
	AppErrors       int      `json:"app_errors"`
	Errors          []string `json:"errors,omitempty"`
	Drained         bool     `json:"drained"` // both directions reached their end

	Handovers int `json:"handovers"`
	Cells     int `json:"cells"`
	Tunnels   int `json:"tunnels"`
	// Stalls per handover, as the applications saw them: the longest time
	// either direction read nothing, from the handover on. Handovers too
	// close to the ride's end to be measured are left out.
	StallP50Ms float64       `json:"stall_p50_ms"`
	StallP99Ms float64       `json:"stall_p99_ms"`
	StallMaxMs float64       `json:"stall_max_ms"`
	Stalls     []stallRecord `json:"stalls"`

	// Goodput over the ride, outages included: bytes read by the
	// applications per second, both directions together and each.
	GoodputMbps     float64 `json:"goodput_mbps"`
	GoodputDownMbps float64 `json:"goodput_down_mbps"`
	GoodputUpMbps   float64 `json:"goodput_up_mbps"`

	Migrations int     `json:"migrations"` // QUIC path switches of the train's connection
	Resumes    int     `json:"resumes"`    // times the flow moved to a new connection
	FlowsLost  int     `json:"flows_lost"`
	RTTMs      float64 `json:"rtt_ms"` // smoothed, at the ride's end
}

type stallRecord struct {
	AtS      float64 `json:"at_s"`
	Cell     int     `json:"cell"` // the cell entered
	OutageMs float64 `json:"outage_ms"`
	StallMs  float64 `json:"stall_ms"`
	RTTMs    float64 `json:"rtt_ms"` // the new cell's configured RTT
}

// ok reports whether the ride met roam's promise: every byte once, in
// order, and no error.
func (s *summary) ok() bool {
	return s.BytesLost == 0 && s.BytesDuplicated == 0 && s.BytesReordered == 0 &&
		s.BytesCorrupt == 0 && s.AppErrors == 0 && s.FlowsLost == 0
}

// fill takes the measures of a ride that ended at rideEnd, when the
// directions had delivered delivered[0] (down) and delivered[1] (up).
func (s *summary) fill(tr *train, down, up *receiver, downSent, upSent uint64, rideEnd time.Time, delivered [2]uint64) {
	s.BytesDown, s.BytesUp = down.received(), up.received()
	s.BytesVerified = s.BytesDown + s.BytesUp
	for _, d := range []struct {
		rc   *receiver
		sent uint64
	}{{down, downSent}, {up, upSent}} {
		lost, dup, reordered, corrupt := d.rc.counts(d.sent)
		s.BytesLost += lost
		s.BytesDuplicated += dup
		s.BytesReordered += reordered
		s.BytesCorrupt += corrupt
	}
	if secs := s.DurationS; secs > 0 {
		s.GoodputDownMbps = round(mbps(delivered[0], secs), 3)
		s.GoodputUpMbps = round(mbps(delivered[1], secs), 3)
		s.GoodputMbps = round(mbps(delivered[0]+delivered[1], secs), 3)
	}

	hs := tr.handoversSoFar()
	s.Handovers, s.Cells = len(hs), len(hs)+1
	tr.mu.Lock()
	s.Tunnels = tr.tunnels
	tr.mu.Unlock()
	var stalls []time.Duration
	s.Stalls = []stallRecord{} // [] in JSON, not null
	for _, h := range hs {
		if h.at.Add(h.outage + stallWindow).After(rideEnd) {
			continue
		}
		st, _ := handoverStall(h, down, up, rideEnd)
		stalls = append(stalls, st)
		s.Stalls = append(s.Stalls, stallRecord{
			AtS: round(h.at.Sub(tr.t0).Seconds(), 3), Cell: h.cell,
			OutageMs: ms(h.outage), StallMs: round(ms(st), 1), RTTMs: ms(h.link.RTT),
		})
	}
	s.StallP50Ms = round(ms(percentile(stalls, 0.50)), 1)
	s.StallP99Ms = round(ms(percentile(stalls, 0.99)), 1)
	s.StallMaxMs = round(ms(percentile(stalls, 1)), 1)
}

// round rounds x to the given decimals, for figures that people read.
func round(x float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(x*p) / p
}

func (s *summary) setErrors(errs []string) {
	s.Errors = errs
	s.AppErrors = len(errs)
}

// percentile returns the p-th percentile of ds by nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Sorted(slices.Values(ds))
	return sorted[max(int(math.Ceil(p*float64(len(sorted))))-1, 0)]
}

// print writes the summary for people.
func (s *summary) print(w io.Writer) {
	how := ""
	if s.Interrupted {
		how = ", interrupted"
	}
	fmt.Fprintf(w, "rode %s for %.1f s (seed %d%s): %s, %s, %s\n", s.Trace, s.DurationS, s.Seed, how,
		count(s.Handovers, "handover"), count(s.Cells, "cell"), count(s.Tunnels, "tunnel"))
	for i, st := range s.Stalls {
		fmt.Fprintf(w, "  handover %d at %5.1f s into cell %d: outage %3.0f ms, stall %4.0f ms (new cell's RTT %.0f ms)\n",
			i+1, st.AtS, st.Cell, st.OutageMs, st.StallMs, st.RTTMs)
	}
	if n := s.Handovers - len(s.Stalls); n > 0 {
		fmt.Fprintf(w, "  (and %s too close to the end to measure)\n", count(n, "handover"))
	}
	fmt.Fprintf(w, "verified %s (stream down %s, telemetry up %s): %d lost, %d duplicated, %d reordered, %d corrupt\n",
		sizeOf(s.BytesVerified), sizeOf(s.BytesDown), sizeOf(s.BytesUp),
		s.BytesLost, s.BytesDuplicated, s.BytesReordered, s.BytesCorrupt)
	fmt.Fprintf(w, "application errors: %d\n", s.AppErrors)
	for _, e := range s.Errors {
		fmt.Fprintf(w, "  %s\n", e)
	}
	fmt.Fprintf(w, "goodput: down %.2f Mbit/s, up %.2f Mbit/s (over the whole ride, outages included)\n",
		s.GoodputDownMbps, s.GoodputUpMbps)
	if len(s.Stalls) > 0 {
		fmt.Fprintf(w, "stall per handover: p50 %.0f ms, p99 %.0f ms, max %.0f ms\n", s.StallP50Ms, s.StallP99Ms, s.StallMaxMs)
	}
	fmt.Fprintf(w, "roam: %s, %s, %d flows lost; RTT %.0f ms at the end\n",
		count(s.Migrations, "migration"), count(s.Resumes, "resume"), s.FlowsLost, s.RTTMs)
	if s.ok() {
		fmt.Fprintln(w, "every byte arrived once, in order, with no application error")
	} else {
		fmt.Fprintln(w, "FAILED: bytes were lost, duplicated, reordered or corrupted, or the applications saw errors")
	}
}

// count formats n things.
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// sizeOf formats a byte count in decimal units.
func sizeOf(b uint64) string {
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(b)/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(b)/1e6)
	case b >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(b)/1e3)
	}
	return fmt.Sprintf("%d B", b)
}
