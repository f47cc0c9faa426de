package main

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The bytes of each direction are a function of their offset: the 8-byte
// word at offset o (a multiple of 8) is o*patternMul ^ key, little-endian.
// So the receiver checks every byte against its position, and when one is
// wrong, the next whole word names the offset the stream is really at: a
// jump forward skips bytes, a jump back re-delivers them. The multiplier
// spreads consecutive offsets over all 64 bits, so that a wrong byte
// rarely matches by chance; the key differs per direction, so that bytes
// of one direction delivered in the other count as corrupt.
const patternMul = 0x9e3779b97f4a7c15 // odd, so invertible mod 2^64

// patternMulInv is patternMul's inverse mod 2^64 (Newton's iteration: each
// step doubles the correct low bits, from 3 to 96).
var patternMulInv = func() uint64 {
	x := uint64(patternMul)
	for range 5 {
		x *= 2 - patternMul*x
	}
	return x
}()

// The keys of the two directions.
const (
	keyDown = 0x5452_4149_4e5f_444e // the service's stream to the train
	keyUp   = 0x5452_4149_4e5f_5550 // the train's telemetry to the service
)

func patternWord(o, key uint64) uint64 { return o*patternMul ^ key }

func patternByte(o, key uint64) byte { return byte(patternWord(o&^7, key) >> (8 * (o & 7))) }

// fillPattern puts the stream's bytes from offset off into b.
func fillPattern(b []byte, off, key uint64) {
	i := 0
	for ; i < len(b) && off&7 != 0; i, off = i+1, off+1 {
		b[i] = patternByte(off, key)
	}
	for ; i+8 <= len(b); i, off = i+8, off+8 {
		binary.LittleEndian.PutUint64(b[i:], patternWord(off, key))
	}
	for ; i < len(b); i, off = i+1, off+1 {
		b[i] = patternByte(off, key)
	}
}

// span is the offsets [from, to).
type span struct{ from, to uint64 }

// verifier checks a stream against the pattern as it arrives, and counts
// exactly what went wrong: bytes that never came (lost), came twice
// (duplicated), came after later ones (reordered), or fit nowhere
// (corrupt). A flow that works leaves every count at zero.
type verifier struct {
	key       uint64
	pos       uint64 // the offset the next byte should have
	high      uint64 // one past the highest offset received
	runStart  uint64 // where the run of matching bytes being read began
	missing   []span // offsets skipped and not received since, in order
	dup       uint64
	reordered uint64
	corrupt   uint64
	lostSync  bool   // a byte did not match; no word has placed the stream since
	pending   []byte // while lostSync: the last bytes read, which may yet belong to a word
}

// feed checks p, the bytes that followed those fed before.
func (v *verifier) feed(p []byte) {
	if len(v.pending) > 0 {
		p = append(v.pending, p...)
		v.pending = nil
	}
	i := 0
	for i < len(p) {
		if v.lostSync {
			j, at, ok := findWord(p[i:], v.key, v.pos)
			if !ok {
				// No whole word: keep for the next read the last bytes,
				// which may begin one (7) or precede one that does (7
				// more), and count the others.
				keep := min(len(p)-i, 14)
				v.corrupt += uint64(len(p) - i - keep)
				v.pos += uint64(len(p) - i - keep)
				v.pending = append([]byte(nil), p[len(p)-keep:]...)
				return
			}
			// The bytes before the word may be the pattern's too: the
			// stream jumped in the middle of a word.
			back := 0
			for back < j && uint64(back) < at && p[i+j-1-back] == patternByte(at-1-uint64(back), v.key) {
				back++
			}
			v.corrupt += uint64(j - back)
			i += j
			v.pos, v.runStart, v.lostSync = at, at-uint64(back), false
			continue
		}
		if v.pos&7 == 0 && len(p)-i >= 8 && binary.LittleEndian.Uint64(p[i:]) == patternWord(v.pos, v.key) {
			i, v.pos = i+8, v.pos+8
			continue
		}
		if p[i] == patternByte(v.pos, v.key) { // a partial word, or the stream jumps within this one
			i, v.pos = i+1, v.pos+1
			continue
		}
		v.commit(v.runStart, v.pos)
		v.lostSync = true
	}
	if !v.lostSync {
		v.commit(v.runStart, v.pos)
		v.runStart = v.pos
	}
}

// commit records that the offsets [from, to) arrived.
func (v *verifier) commit(from, to uint64) {
	if to <= from {
		return
	}
	if from >= v.high { // the usual case: new bytes, right after the last
		if from > v.high {
			v.missing = append(v.missing, span{v.high, from})
		}
		v.high = to
		return
	}
	// Offsets already passed: those still missing came late, the others
	// came again.
	old := min(to, v.high) - from
	var late uint64
	kept := v.missing[:0]
	for _, m := range v.missing {
		lo, hi := max(m.from, from), min(m.to, to)
		if lo >= hi {
			kept = append(kept, m)
			continue
		}
		late += hi - lo
		if m.from < lo {
			kept = append(kept, span{m.from, lo})
		}
		if hi < m.to {
			kept = append(kept, span{hi, m.to})
		}
	}
	v.missing = kept
	v.reordered += late
	v.dup += old - late
	v.high = max(v.high, to)
}

// lost returns the bytes of a stream of sent bytes that never arrived;
// bytes past sent, which no sender wrote, count as corrupt.
func (v *verifier) lost(sent uint64) (lost, corrupt uint64) {
	for _, m := range v.missing {
		if m.from < sent {
			lost += min(m.to, sent) - m.from
		}
	}
	if sent > v.high {
		lost += sent - v.high
	} else {
		corrupt = v.high - sent
	}
	return lost, v.corrupt + uint64(len(v.pending)) + corrupt
}

// findWord returns the first index j in p where a word of the pattern
// starts whose offset lies within 1 GiB of near+j: where the stream
// really is.
func findWord(p []byte, key, near uint64) (j int, at uint64, ok bool) {
	const window = 1 << 30
	for j = 0; j+8 <= len(p); j++ {
		o := (binary.LittleEndian.Uint64(p[j:]) ^ key) * patternMulInv
		want := near + uint64(j)
		if o&7 == 0 && o+window > want && o < want+window {
			return j, o, true
		}
	}
	return 0, 0, false
}

// sender writes one direction's pattern: as fast as the flow takes it
// (bulk), or size bytes every interval, as a telemetry feed does. A paced
// sender keeps to its schedule whatever happens to the flow: what falls
// due while a Write blocks goes out in one Write when it returns, as from
// an application with a queue in front of its socket.
type sender struct {
	key   uint64
	every time.Duration // 0: bulk
	size  int
	sent  atomic.Uint64 // bytes Write accepted: exactly what must arrive
	stop  chan struct{}
	once  sync.Once
}

func newSender(key uint64) *sender { return &sender{key: key, stop: make(chan struct{})} }

func newPacedSender(key uint64, size int, every time.Duration) *sender {
	s := newSender(key)
	s.size, s.every = size, every
	return s
}

// flowWriter is the part of a *sal.Conn a sender uses.
type flowWriter interface {
	io.Writer
	SetWriteDeadline(time.Time) error
}

// run writes until halt, then returns nil; any other end of a Write is an
// application error, which it returns.
func (s *sender) run(w flowWriter) error {
	// Writes of at most 16 KiB, so that one returns soon after its bytes
	// fit into the flow's buffer, and the byte counts move smoothly.
	buf := make([]byte, 16<<10)
	var off uint64
	write := func(n uint64) error {
		b := buf[:min(uint64(len(buf)), n)]
		fillPattern(b, off, s.key)
		k, err := w.Write(b)
		off += uint64(k)
		s.sent.Store(off)
		if err != nil && s.halted() && errors.Is(err, os.ErrDeadlineExceeded) {
			return errHalted // what Write reports written is still delivered
		}
		return err
	}
	if s.every <= 0 {
		for !s.halted() {
			if err := write(uint64(len(buf))); err != nil {
				return ignoreHalted(err)
			}
		}
		return nil
	}
	start := time.Now()
	tick := time.NewTicker(s.every)
	defer tick.Stop()
	for {
		due := (uint64(time.Since(start)/s.every) + 1) * uint64(s.size)
		for off < due {
			if err := write(due - off); err != nil {
				return ignoreHalted(err)
			}
		}
		select {
		case <-s.stop:
			return nil
		case <-tick.C:
		}
	}
}

var errHalted = errors.New("halted")

func ignoreHalted(err error) error {
	if err == errHalted {
		return nil
	}
	return err
}

// halt stops the sender: a Write under way returns at once, through a
// deadline, rather than when the flow has room again (which, in a tunnel,
// may be many seconds away).
func (s *sender) halt(w flowWriter) {
	s.once.Do(func() { close(s.stop) })
	_ = w.SetWriteDeadline(time.Now())
}

func (s *sender) halted() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// minGap is the shortest pause in delivery that a receiver keeps: shorter
// ones are the spacing of datagrams at the lowest rates, not stalls.
const minGap = 10 * time.Millisecond

// gap is a time in which a receiver read nothing.
type gap struct{ from, to time.Time }

// receiver is one direction's receiving application: it verifies every
// byte and notes when data stopped coming.
type receiver struct {
	spacing time.Duration // a paced sender's interval: the normal gap, no stall

	mu    sync.Mutex
	v     verifier
	bytes uint64
	last  time.Time // the last read; the start of the run before any
	gaps  []gap
	done  bool // read io.EOF
}

func newReceiver(key uint64, spacing time.Duration, start time.Time) *receiver {
	return &receiver{v: verifier{key: key}, spacing: spacing, last: start}
}

// drain reads r until it ends; it returns nil at io.EOF.
func (rc *receiver) drain(r io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			rc.feed(buf[:n], time.Now())
		}
		if errors.Is(err, io.EOF) {
			rc.mu.Lock()
			rc.done = true
			rc.mu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (rc *receiver) feed(p []byte, now time.Time) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.v.feed(p)
	rc.bytes += uint64(len(p))
	if now.Sub(rc.last) >= minGap {
		rc.gaps = append(rc.gaps, gap{rc.last, now})
	}
	rc.last = now
}

// received returns the bytes read so far.
func (rc *receiver) received() uint64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.bytes
}

// stallAfter returns how long delivery stopped because of a disruption
// at t: the longest gap that overlaps [t, t+window], counted from t at the
// earliest (a gap already under way at t, as at the end of a tunnel, is
// not the disruption's doing before t), less the normal spacing of a
// paced stream. A gap still open at now counts up to now, and open says
// so.
func (rc *receiver) stallAfter(t time.Time, window time.Duration, now time.Time) (stall time.Duration, open bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	gaps := rc.gaps
	ongoing := !rc.done && now.Sub(rc.last) >= minGap
	if ongoing {
		gaps = append(gaps[:len(gaps):len(gaps)], gap{rc.last, now})
	}
	end := t.Add(window)
	longest := -1
	for i, g := range gaps {
		if g.to.After(t) && g.from.Before(end) {
			if d := g.to.Sub(later(g.from, t)); d > stall {
				stall, longest = d, i
			}
		}
	}
	return max(stall-rc.spacing, 0), ongoing && longest == len(gaps)-1
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// counts returns what the verifier found, for a stream of sent bytes.
func (rc *receiver) counts(sent uint64) (lost, dup, reordered, corrupt uint64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	lost, corrupt = rc.v.lost(sent)
	return lost, rc.v.dup, rc.v.reordered, corrupt
}
