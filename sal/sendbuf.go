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

// buffered returns how many data bytes the buffer holds.
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

// capacity is the memory the buffer holds: its chunks, whole, whatever
// part of them holds data. It is what a flow is charged for (see budget).
func (b *sendBuffer) capacity() int { return len(b.chunks) * chunkSize }

// need returns the memory, in whole chunks, that appending n bytes would
// add to the buffer.
func (b *sendBuffer) need(n int) int {
	want := (int(b.end-b.first) + n + chunkSize - 1) / chunkSize
	return max(0, want-len(b.chunks)) * chunkSize
}

// fits returns how many bytes can be appended within the chunks held
// plus extra bytes of new chunks.
func (b *sendBuffer) fits(extra int) int {
	return max(0, b.capacity()+extra-int(b.end-b.first))
}

// budget bounds the memory all of a Host's flows keep for replay
// (Config.HostBuffer), counted in whole chunks, so that a peer with many
// flows of one unacknowledged byte each is charged for what they really
// hold. It is shared fairly between the Host's connections: each takes
// from its own share, which holds at most connLimit, and once half the
// budget is in use a connection may grow only up to an equal part of the
// other half (limit / (2 × connections holding memory)). So one peer that
// stops acknowledging can fill its share and no more, and an honest
// connection always finds room for its fair part: the others together
// hold at most limit/2 from before the pressure plus their own fair parts.
//
// Writers take before buffering and give back what the peer acknowledged;
// a writer refused waits on the channel take returns.
type budget struct {
	mu        sync.Mutex
	limit     int
	connLimit int
	used      int
	active    int           // shares holding memory
	waiting   chan struct{} // closed and replaced when memory is given back
}

// A share is one connection's part of the budget. Its fields are guarded
// by the budget's mu.
type share struct {
	used int
	// waiting, when not nil, is closed when the share gives memory back:
	// writers refused for the share's own limit wait on it rather than on
	// the budget's channel, so that a peer with thousands of blocked flows
	// does not wake them all each time any other flow is acknowledged.
	waiting chan struct{}
}

func newBudget(limit, connLimit int) *budget {
	return &budget{limit: limit, connLimit: min(connLimit, limit), waiting: make(chan struct{})}
}

// take takes up to n bytes, in whole chunks, for s and returns how many it
// took, and a channel that is closed when more room may be available.
func (b *budget) take(s *share, n int) (int, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	grant := min(n, b.limit-b.used, b.connLimit-s.used)
	if b.used >= b.limit/2 {
		active := b.active
		if s.used == 0 {
			active++
		}
		grant = min(grant, b.limit/(2*active)-s.used)
	}
	grant -= grant % chunkSize
	if grant <= 0 {
		if s.used+chunkSize > b.connLimit {
			if s.waiting == nil {
				s.waiting = make(chan struct{})
			}
			return 0, s.waiting
		}
		return 0, b.waiting
	}
	if s.used == 0 {
		b.active++
	}
	s.used += grant
	b.used += grant
	return grant, b.waiting
}

// give gives back n bytes s took.
func (b *budget) give(s *share, n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.release(s, n)
	close(b.waiting)
	b.waiting = make(chan struct{})
}

func (b *budget) release(s *share, n int) {
	s.used -= n
	b.used -= n
	if s.used == 0 {
		b.active--
	}
	if s.waiting != nil {
		close(s.waiting)
		s.waiting = nil
	}
}

// move charges n bytes taken by from to to instead, as when a flow resumes
// on another connection. The new share may go over its limit for a while;
// it takes no more until it is back under.
func (b *budget) move(from, to *share, n int) {
	if n == 0 || from == to {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.release(from, n)
	if to.used == 0 {
		b.active++
	}
	to.used += n
	b.used += n
}

func (b *budget) inUse() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
