package sal

import (
	"math"
	"math/bits"
	"sync"
)

// A flow's replay buffer grows by chunks of size classes, from minChunk to
// maxChunk, each a power of two. A flow's first chunk fits its first
// write, and each further one is at least twice the one before it: a
// telemetry flow that keeps a 256-byte message unacknowledged holds 1 KiB,
// while a bulk flow is at maxChunk after a few chunks. Chunks go back to
// their class's pool once everything in them is acknowledged, so an idle
// flow holds none.
const (
	minChunkShift = 10
	maxChunkShift = 16
	minChunk      = 1 << minChunkShift
	maxChunk      = 1 << maxChunkShift
)

// chunkPools holds the free chunks of each class. They hold *[]byte, so
// that a Put does not allocate.
var chunkPools [maxChunkShift - minChunkShift + 1]sync.Pool

func init() {
	for i := range chunkPools {
		size := minChunk << i
		chunkPools[i].New = func() any { b := make([]byte, size); return &b }
	}
}

// chunkClass returns the smallest class that holds n bytes, within
// [minChunk, maxChunk].
func chunkClass(n int) int {
	if n <= minChunk {
		return minChunk
	}
	return min(maxChunk, 1<<bits.Len(uint(n-1)))
}

func classIndex(size int) int { return bits.Len(uint(size)) - 1 - minChunkShift }

// chunk is one piece of a replay buffer: len(*p) bytes from flow offset off.
type chunk struct {
	off uint64
	p   *[]byte
}

func (c chunk) end() uint64 { return c.off + uint64(len(*c.p)) }

func newChunk(off uint64, size int) chunk {
	return chunk{off: off, p: chunkPools[classIndex(size)].Get().(*[]byte)}
}

func (c chunk) free() { chunkPools[classIndex(len(*c.p))].Put(c.p) }

// sendBuffer keeps the bytes of a flow that the peer has not acknowledged
// reading, so that they can be replayed on a new stream after a resume. It
// holds flow offsets [acked, end) in chunks that follow one another:
// chunks[i+1].off == chunks[i].end(), and the last may have room after end.
// It is not safe for concurrent use.
type sendBuffer struct {
	chunks []chunk
	size   int // the chunks' bytes, whole: what the flow is charged for
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
	drop := 0
	for _, c := range b.chunks {
		if c.end() > b.acked || b.held && c.end() > b.pin {
			break
		}
		drop++
	}
	if b.acked == b.end && !b.held {
		// All acknowledged: a flow that sends a little now and then (a
		// telemetry feed) holds no chunk between its messages.
		drop = len(b.chunks)
	}
	if drop == 0 {
		return
	}
	for i, c := range b.chunks[:drop] {
		b.size -= len(*c.p)
		c.free()
		b.chunks[i] = chunk{}
	}
	b.chunks = b.chunks[drop:]
	if len(b.chunks) == 0 {
		b.chunks = nil // let the backing array go too
	}
}

// buffered returns how many data bytes the buffer holds.
func (b *sendBuffer) buffered() int { return int(b.end - b.acked) }

// room returns how many bytes fit after end in the chunks held.
func (b *sendBuffer) room() int {
	if len(b.chunks) == 0 {
		return 0
	}
	return int(b.chunks[len(b.chunks)-1].end() - b.end)
}

// chunkAfter is the size of the chunk to add for n more bytes after a
// chunk of last bytes (0: none): the class that fits them, and at least
// twice the last chunk.
func chunkAfter(n, last int) int { return max(chunkClass(n), min(maxChunk, 2*last)) }

// lastChunk is the size of the buffer's last chunk, 0 if it has none.
func (b *sendBuffer) lastChunk() int {
	if len(b.chunks) == 0 {
		return 0
	}
	return len(*b.chunks[len(b.chunks)-1].p)
}

// need returns the memory that appending n bytes would add in new chunks.
func (b *sendBuffer) need(n int) int {
	n -= b.room()
	total, last := 0, b.lastChunk()
	for n > 0 {
		size := chunkAfter(n, last)
		total, n, last = total+size, n-size, size
	}
	return total
}

// grow adds chunks for up to n more bytes, within allowance bytes of
// memory, and returns the memory it added. Where the next chunk's class
// does not fit in what is left of the allowance, it takes the largest
// class that does.
func (b *sendBuffer) grow(n, allowance int) int {
	n -= b.room()
	added := 0
	for n > 0 {
		size := chunkAfter(n, b.lastChunk())
		if size > allowance-added {
			if allowance-added < minChunk {
				break
			}
			size = 1 << (bits.Len(uint(allowance-added)) - 1)
		}
		b.chunks = append(b.chunks, newChunk(b.end+uint64(b.room()), size))
		b.size += size
		added += size
		n -= size
	}
	return added
}

// append copies p to the end of the buffer, adding chunks as needed.
func (b *sendBuffer) append(p []byte) {
	b.grow(len(p), math.MaxInt)
	i := b.find(b.end)
	for len(p) > 0 {
		c := b.chunks[i]
		n := copy((*c.p)[b.end-c.off:], p)
		b.end += uint64(n)
		p = p[n:]
		i++
	}
}

// find returns the index of the chunk that holds offset off, or that off
// would begin if it is the end of the last one.
func (b *sendBuffer) find(off uint64) int {
	lo, hi := 0, len(b.chunks)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if b.chunks[mid].end() <= off {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// slice returns the buffered bytes from offset off to the end of off's
// chunk (or of the data). It returns nil when off is at the end. off must
// lie in [acked, end].
func (b *sendBuffer) slice(off uint64) []byte {
	if off >= b.end || off < b.acked || len(b.chunks) == 0 || off < b.chunks[0].off {
		return nil
	}
	c := b.chunks[b.find(off)]
	stop := min(c.end(), b.end)
	return (*c.p)[off-c.off : stop-c.off]
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
// returns how many it dropped, with the chunks that held only them.
func (b *sendBuffer) truncate(off uint64) int {
	off = max(off, b.acked)
	if off >= b.end {
		return 0
	}
	n := int(b.end - off)
	b.end = off
	keep := len(b.chunks)
	for keep > 0 && b.chunks[keep-1].off >= off {
		keep--
	}
	for i := keep; i < len(b.chunks); i++ {
		b.size -= len(*b.chunks[i].p)
		b.chunks[i].free()
		b.chunks[i] = chunk{}
	}
	b.chunks = b.chunks[:keep]
	if keep == 0 {
		b.chunks = nil
	}
	return n
}

// release returns every chunk to its pool.
func (b *sendBuffer) release() int {
	n := b.buffered()
	if !b.held { // a held chunk may still be read: leave it to the GC
		for _, c := range b.chunks {
			c.free()
		}
	}
	b.chunks = nil
	b.size = 0
	b.end = b.acked
	return n
}

// capacity is the memory the buffer holds: its chunks, whole, whatever
// part of them holds data. It is what a flow is charged for (see budget).
func (b *sendBuffer) capacity() int { return b.size }
