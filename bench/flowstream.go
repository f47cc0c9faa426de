package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"time"
)

// The handover workload: a 1 kHz stream of 64-byte messages from client to
// server, as a telemetry or control feed sends. One direction keeps the
// measure simple: the receiver's clock alone says when data stopped and
// when it came back. Message seq holds seq and its due time (the
// schedule's start plus seq ms), then padding; so any byte of the stream
// can be made again from its offset, which is all the hand-written resume
// of the baselines needs to resend.
//
// The stall of a handover is the longest gap between consecutive
// arrivals at the receiver that ends after the handover began, less the
// normal gap of 1 ms. The sender keeps to its schedule whatever happens
// to the flow: messages that fall due while a write blocks go out in one
// write when it returns, as from an application with a queue in front of
// its socket; so a stall shows as a gap followed by a burst.

const (
	msgSize  = 64
	msgEvery = time.Millisecond
)

// schedule is a stream's timetable: message seq is due at start+seq ms.
type schedule struct{ start time.Time }

// due returns how many messages are due at t.
func (s schedule) due(t time.Time) uint64 {
	if t.Before(s.start) {
		return 0
	}
	return uint64(t.Sub(s.start)/msgEvery) + 1
}

// fill puts the stream's bytes from offset off into b.
func (s schedule) fill(b []byte, off uint64) {
	var m [msgSize]byte
	for i := 16; i < msgSize; i++ {
		m[i] = byte(i)
	}
	for i := 0; i < len(b); {
		pos := off + uint64(i)
		seq := pos / msgSize
		binary.BigEndian.PutUint64(m[0:], seq)
		binary.BigEndian.PutUint64(m[8:], uint64(s.start.Add(time.Duration(seq)*msgEvery).UnixNano()))
		i += copy(b[i:], m[pos%msgSize:])
	}
}

// pump writes the stream to w from offset off as it falls due, until ctx
// ends or a write fails, and returns the offset it reached.
func (s schedule) pump(ctx context.Context, w io.Writer, off uint64) (uint64, error) {
	t := time.NewTicker(msgEvery)
	defer t.Stop()
	buf := make([]byte, 64<<10)
	for {
		if end := s.due(time.Now()) * msgSize; end > off {
			b := buf[:min(end-off, uint64(len(buf)))]
			s.fill(b, off)
			n, err := w.Write(b)
			off += uint64(n)
			if err != nil {
				return off, err
			}
			continue // more may have fallen due meanwhile
		}
		select {
		case <-ctx.Done():
			return off, context.Cause(ctx)
		case <-t.C:
		}
	}
}

// recorder is the receiving end: it notes when each message arrived and
// checks that the stream comes in order, without loss or duplicates.
type recorder struct {
	s schedule

	mu      sync.Mutex
	arrived []time.Time // by seq
	part    [msgSize]byte
	partN   int
	bytes   uint64
	err     error
}

func newRecorder(s schedule) *recorder {
	return &recorder{s: s, arrived: make([]time.Time, 0, 1<<16)}
}

func (r *recorder) feed(p []byte, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bytes += uint64(len(p))
	for len(p) > 0 {
		k := copy(r.part[r.partN:], p)
		r.partN += k
		p = p[k:]
		if r.partN < msgSize {
			return
		}
		r.partN = 0
		if seq := binary.BigEndian.Uint64(r.part[:]); seq != uint64(len(r.arrived)) && r.err == nil {
			r.err = fmt.Errorf("message %d arrived where %d was due", seq, len(r.arrived))
		}
		r.arrived = append(r.arrived, now)
	}
}

// drain feeds what rd delivers until it ends.
func (r *recorder) drain(rd io.Reader) { feedAll(rd, r.feed) }

// received returns how many bytes of the stream arrived.
func (r *recorder) received() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// fresh reports whether the stream is caught up at now: the newest message
// that arrived fell due no more than a path's delay and some slack ago.
func (r *recorder) fresh(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := uint64(len(r.arrived))
	return n > 0 && n >= r.s.due(now.Add(-oneWay-15*time.Millisecond))
}

// longestGap returns the longest gap between consecutive arrivals that
// ends after from and begins before to, and when it ended.
func (r *recorder) longestGap(from, to time.Time) (gap time.Duration, end time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, _ := slices.BinarySearchFunc(r.arrived, from, func(a, t time.Time) int { return a.Compare(t) })
	for i = max(i, 1); i < len(r.arrived) && r.arrived[i-1].Before(to); i++ {
		if g := r.arrived[i].Sub(r.arrived[i-1]); g > gap {
			gap, end = g, r.arrived[i]
		}
	}
	return gap, end
}

func (r *recorder) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Handover pacing: a stall is looked for until the stream is caught up
// and at least minObserve has passed since the handover; then the stream
// runs quiet for quietTime before the next handover. A stream not caught
// up within hangBound fails the benchmark.
const (
	minObserve = 5 * pathRTT
	quietTime  = 100 * time.Millisecond
	hangBound  = 10 * time.Second
)

// settle waits until the stream has recovered from a handover at t0 and
// returns the time it saw it recovered.
func (r *recorder) settle(t0 time.Time) (time.Time, error) {
	for {
		now := time.Now()
		if now.Sub(t0) >= minObserve && r.fresh(now) {
			return now, r.failure()
		}
		if now.Sub(t0) > hangBound {
			return now, fmt.Errorf("no data for %v after the handover", hangBound)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// percentile returns the p-th percentile of ds by nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return s[max(int(math.Ceil(p*float64(len(s))))-1, 0)]
}

func ms(d time.Duration) float64   { return float64(d) / float64(time.Millisecond) }
func rtts(d time.Duration) float64 { return float64(d) / float64(pathRTT) }
