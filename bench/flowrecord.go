package main

import (
	"io"
	"sync"
	"time"
)

// flowRecord is the receiving application of one flow in `go run
// ./bench`: it checks every byte against the pattern (pattern.go), counts
// bytes per time bin for the goodput series, and keeps every gap between
// reads longer than minGap, from which the stalls are read.
type flowRecord struct {
	start time.Time     // the run's clock starts here; bins count from it
	bin   time.Duration // width of a goodput bin

	mu      sync.Mutex
	v       verifier
	bytes   uint64 // bytes read, in all
	atStart uint64 // bytes read before start
	last    time.Time
	bins    []uint64
	gaps    []gap
	full    chan struct{} // closed once want bytes are in
	want    uint64        // 0: no target
	doneAt  time.Time     // when want bytes were in
}

// gap is a time in which the receiver read nothing.
type gap struct{ from, to time.Time }

// minGap is the shortest gap a flowRecord keeps: shorter ones are the
// spacing of datagrams at the lowest rates, not stalls.
const minGap = 10 * time.Millisecond

func newFlowRecord(bin time.Duration, want uint64) *flowRecord {
	return &flowRecord{bin: bin, want: want, full: make(chan struct{})}
}

// begin starts the run's clock: what arrives from now on counts.
func (r *flowRecord) begin(t0 time.Time) {
	r.mu.Lock()
	r.start = t0
	r.atStart = r.bytes
	r.mu.Unlock()
}

func (r *flowRecord) feed(p []byte, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.v.feed(p)
	r.bytes += uint64(len(p))
	if !r.last.IsZero() && now.Sub(r.last) >= minGap {
		r.gaps = append(r.gaps, gap{r.last, now})
	}
	r.last = now
	if r.start.IsZero() {
		r.atStart = r.bytes
	} else if i := int(now.Sub(r.start) / r.bin); i < 1<<20 {
		for len(r.bins) <= i {
			r.bins = append(r.bins, 0)
		}
		r.bins[i] += uint64(len(p))
	}
	if r.want > 0 && r.doneAt.IsZero() && r.bytes >= r.want {
		r.doneAt = now
		close(r.full)
	}
}

// drain feeds what rd delivers until it ends. It implements streamSink.
func (r *flowRecord) drain(rd io.Reader) { feedAll(rd, r.feed) }

// feedAll passes what rd delivers to feed, with the time of each read,
// until a read fails, and returns that error.
func feedAll(rd io.Reader, feed func(p []byte, now time.Time)) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := rd.Read(buf)
		if n > 0 {
			feed(buf[:n], time.Now())
		}
		if err != nil {
			return err
		}
	}
}

// received returns how many bytes arrived: where a resumed session goes
// on. It implements streamSink.
func (r *flowRecord) received() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// flowSummary is what a flowRecord saw, read once the run is over.
type flowSummary struct {
	bytes, sinceStart  uint64
	lost, dup, corrupt uint64
	bins               []uint64
	gaps               []gap
	doneAt             time.Time
	last               time.Time // the last arrival
}

// summary reads the record at end; a stall still going on then counts as
// a gap up to end.
func (r *flowRecord) summary(end time.Time) flowSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	gaps := append([]gap(nil), r.gaps...)
	last := r.last
	if last.Before(r.start) {
		last = r.start
	}
	if end.Sub(last) >= minGap {
		gaps = append(gaps, gap{last, end})
	}
	return flowSummary{
		bytes: r.bytes, sinceStart: r.bytes - r.atStart,
		lost: r.v.lost, dup: r.v.dup, corrupt: r.v.corrupt,
		bins: append([]uint64(nil), r.bins...), gaps: gaps,
		doneAt: r.doneAt, last: r.last,
	}
}

// stallAround returns the longest gap that overlaps [from, to]: the stall
// of a disruption in that window. Zero if data never stopped for minGap.
func (s *flowSummary) stallAround(from, to time.Time) time.Duration {
	var longest time.Duration
	for _, g := range s.gaps {
		if g.to.After(from) && g.from.Before(to) {
			longest = max(longest, g.to.Sub(g.from))
		}
	}
	return longest
}

// receivedAfter reports whether data arrived after t: the flow lives.
func (s *flowSummary) receivedAfter(t time.Time) bool { return s.last.After(t) }
