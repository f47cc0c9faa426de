package sal

import (
	"sync"
)

// chunkSize is the unit a flow's replay buffer grows and shrinks by. An
// idle flow holds no chunk; a busy one holds what the peer has not yet
// acknowledged, rounded up to chunks.
const chunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any { return new([chunkSize]byte) }}

// sendBuffer keeps the bytes of a flow that the peer has not acknowledged
// reading, so that they can be replayed on a new stream after a resume. It
// holds flow offsets [acked, end); chunks[0] begins at offset first, a
// multiple of chunkSize. It is not safe for concurrent use.
type sendBuffer struct {
	chunks []*[chunkSize]byte
	first  uint64
	acked  uint64
	end    uint64
	// A flush reads chunks after the Conn's mu is released; an Ack that
	// arrives meanwhile must not hand them to another flow. held keeps
	// the chunks from offset pin on.
	held bool
	pin  uint64
}

// hold keeps the chunks from off on until unhold.
func (b *sendBuffer) hold(off uint64) { b.held, b.pin = true, off }

// unhold lets go of them, freeing what was acknowledged meanwhile.
func (b *sendBuffer) unhold() {
	b.held = false
	b.trim()
}

// trim gives back the leading chunks that hold only acknowledged bytes
// and no held ones.
func (b *sendBuffer) trim() {
	for len(b.chunks) > 0 && b.acked-b.first >= chunkSize && (!b.held || b.pin-b.first >= chunkSize) {
		chunkPool.Put(b.chunks[0])
		b.chunks[0] = nil
		b.chunks = b.chunks[1:]
		b.first += chunkSize
	}
	if len(b.chunks) > 0 && b.acked == b.end && !b.held {
		// All acknowledged: a flow that sends a little now and then (a
		// telemetry feed) holds no chunk between its messages, rather than
		// 64 KiB at each end for as long as it lives.
		for i, c := range b.chunks {
			chunkPool.Put(c)
			b.chunks[i] = nil
		}
		b.chunks = b.chunks[:0]
	}
	if len(b.chunks) == 0 {
		b.chunks = nil // let the backing array go too
		b.first = b.acked - b.acked%chunkSize
	}
}

// buffered returns how many bytes the buffer holds.
func (b *sendBuffer) buffered() int { return int(b.end - b.acked) }

// append copies p to the end of the buffer.
func (b *sendBuffer) append(p []byte) {
	for len(p) > 0 {
		idx := int((b.end - b.first) / chunkSize)
		if idx == len(b.chunks) {
			b.chunks = append(b.chunks, chunkPool.Get().(*[chunkSize]byte))
		}
		n := copy(b.chunks[idx][(b.end-b.first)%chunkSize:], p)
		b.end += uint64(n)
		p = p[n:]
	}
}

// slice returns the buffered bytes from offset off to the end of off's
// chunk (or of the data). It returns nil when off is at the end. off must
// lie in [acked, end].
func (b *sendBuffer) slice(off uint64) []byte {
	if off >= b.end || off < b.acked || off < b.first {
		return nil
	}
	idx := int((off - b.first) / chunkSize)
	start := (off - b.first) % chunkSize
	stop := uint64(chunkSize)
	if rest := b.end - off; rest < stop-start {
		stop = start + rest
	}
	return b.chunks[idx][start:stop]
}

// ack drops the bytes before off and returns how many it dropped.
func (b *sendBuffer) ack(off uint64) int {
	off = min(off, b.end)
	if off <= b.acked {
		return 0
	}
	n := int(off - b.acked)
	b.acked = off
	b.trim()
	return n
}

// truncate drops the bytes from off on, which were never sent, and
// returns how many it dropped.
func (b *sendBuffer) truncate(off uint64) int {
	off = max(off, b.acked)
	if off >= b.end {
		return 0
	}
	n := int(b.end - off)
	b.end = off
	keep := int((b.end - b.first + chunkSize - 1) / chunkSize)
	for i := keep; i < len(b.chunks); i++ {
		chunkPool.Put(b.chunks[i])
		b.chunks[i] = nil
	}
	b.chunks = b.chunks[:keep]
	return n
}

// release returns every chunk to the pool.
func (b *sendBuffer) release() int {
	n := b.buffered()
	if !b.held { // a held chunk may still be read: leave it to the GC
		b.truncate(b.acked)
		for _, c := range b.chunks {
			chunkPool.Put(c)
		}
	}
	b.chunks = nil
	b.end = b.acked
	return n
}

// budget bounds the bytes all of a Host's flows keep for replay. Writers
// take from it before buffering and give back what the peer acknowledged;
// changed wakes writers waiting for room.
type budget struct {
	mu      sync.Mutex
	limit   int
	used    int
	waiting chan struct{} // closed and replaced when room is given back
}

func newBudget(limit int) *budget { return &budget{limit: limit, waiting: make(chan struct{})} }

// take takes up to n bytes and returns how many it took, and a channel
// that is closed when more room may be available.
func (b *budget) take(n int) (int, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n = min(n, b.limit-b.used)
	if n < 0 {
		n = 0
	}
	b.used += n
	return n, b.waiting
}

func (b *budget) give(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	close(b.waiting)
	b.waiting = make(chan struct{})
}

func (b *budget) inUse() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
