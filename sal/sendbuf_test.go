package sal

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSendBufferModel checks the buffer against a plain byte slice under
// random appends, acks and truncations.
func TestSendBufferModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b sendBuffer
	var model []byte // bytes [modelBase, modelBase+len)
	var modelBase uint64
	src := randomBytes(1<<20, 3)
	for i := range 5000 {
		switch op := rng.IntN(10); {
		case op < 5:
			n := rng.IntN(3 * maxChunk)
			p := src[rng.IntN(len(src)-n):][:n]
			b.append(p)
			model = append(model, p...)
		case op < 8:
			off := modelBase + uint64(rng.IntN(len(model)+1))
			dropped := b.ack(off)
			require.Equal(t, int(off-modelBase), dropped)
			model = model[off-modelBase:]
			modelBase = off
		default:
			off := modelBase + uint64(rng.IntN(len(model)+1))
			require.Equal(t, len(model)-int(off-modelBase), b.truncate(off))
			model = model[:off-modelBase]
		}
		require.Equal(t, len(model), b.buffered(), "step %d", i)
		// Reading from any offset gives the model's bytes.
		off := modelBase + uint64(rng.IntN(len(model)+1))
		// Each slice is compared in place: copying them out took most of
		// the test's time under the race detector (4.3 s, now 2.0 s).
		o := off
		for {
			s := b.slice(o)
			if s == nil {
				break
			}
			rest := model[o-modelBase:]
			require.LessOrEqual(t, len(s), len(rest), "step %d: past the end", i)
			require.True(t, bytes.Equal(rest[:len(s)], s), "step %d", i)
			o += uint64(len(s))
		}
		require.Equal(t, modelBase+uint64(len(model)), o, "step %d: all of it", i)
		require.LessOrEqual(t, b.capacity(), 2*len(model)+2*maxChunk, "step %d: chunks must be given back", i)
		sum := 0
		for j, c := range b.chunks {
			sum += len(*c.p)
			if j > 0 {
				require.Equal(t, b.chunks[j-1].end(), c.off, "step %d: chunks follow one another", i)
			}
		}
		require.Equal(t, sum, b.capacity(), "step %d", i)
	}
	require.Equal(t, len(model), b.release())
	require.Nil(t, b.chunks)
	require.Zero(t, b.capacity())
}

// TestSendBufferSizeClasses: a small message takes a small chunk, a bulk
// flow grows to maxChunk chunks, and Write's grow stays within what the
// budget granted.
func TestSendBufferSizeClasses(t *testing.T) {
	var b sendBuffer
	require.Equal(t, minChunk, b.need(256))
	b.append(make([]byte, 256))
	require.Equal(t, minChunk, b.capacity(), "256 bytes unacknowledged hold 1 KiB, not a 64 KiB chunk")
	require.Equal(t, minChunk-256, b.room())

	b.append(make([]byte, 1000)) // past the first chunk: the next is twice its size
	require.Len(t, b.chunks, 2)
	require.Equal(t, 2*minChunk, len(*b.chunks[1].p))

	for range 20 {
		b.append(make([]byte, 32<<10))
	}
	require.Equal(t, maxChunk, len(*b.chunks[len(b.chunks)-1].p), "a bulk flow moves in maxChunk chunks")
	b.ack(b.end)
	require.Zero(t, b.capacity(), "all acknowledged: nothing held")

	var g sendBuffer
	require.Equal(t, 64<<10, g.need(40<<10), "the class that fits")
	require.Equal(t, 40<<10, g.grow(40<<10, 40<<10), "within a 40 KiB grant: the largest classes that fit")
	require.Len(t, g.chunks, 2)
	require.Equal(t, 32<<10, len(*g.chunks[0].p))
	require.Equal(t, 40<<10, g.room())
	require.Zero(t, g.grow(4<<10, minChunk-1), "no class fits under minChunk")
	g.append(make([]byte, 40<<10))
	require.Equal(t, 40<<10, g.capacity(), "append used the room grown")
}

// A flow that sends a little now and then holds no chunk between its
// messages once they are acknowledged, unless a flush still reads them.
func TestSendBufferIdleHoldsNoChunk(t *testing.T) {
	var b sendBuffer
	msg := []byte("256 bytes of telemetry, give or take")
	b.append(msg)
	require.Len(t, b.chunks, 1)
	b.ack(uint64(len(msg)))
	require.Empty(t, b.chunks, "everything acknowledged")

	b.append(msg)
	require.Equal(t, msg, b.slice(uint64(len(msg))), "the next message starts mid-chunk")
	b.hold(uint64(len(msg)))
	b.ack(uint64(2 * len(msg)))
	require.Len(t, b.chunks, 1, "a flush still reads the chunk")
	b.unhold()
	require.Empty(t, b.chunks)
	require.Zero(t, b.release())
}

func TestBudget(t *testing.T) {
	const c = maxChunk
	b := newBudget(100*c, 100*c)
	a := new(share)
	n, _ := b.take(a, 60*c)
	require.Equal(t, 60*c, n)
	n, wait := b.take(a, 60*c)
	require.Zero(t, n, "past half the budget, one connection holds at most the other half's fair part")
	b.give(a, 50*c)
	select {
	case <-wait:
	default:
		t.Fatal("give must wake waiters")
	}
	require.Equal(t, 10*c, b.inUse())
	n, _ = b.take(a, c+minChunk/2)
	require.Equal(t, c, n, "memory is taken in whole minChunks")
}

// TestBudgetIsFair checks the promise the budget makes to an honest
// connection: whatever others took first, it finds its fair part.
func TestBudgetIsFair(t *testing.T) {
	const c = maxChunk
	b := newBudget(64*c, 64*c)
	greedy := []*share{new(share), new(share), new(share)}
	for { // the greedy take all they can, in turns
		took := 0
		for _, g := range greedy {
			n, _ := b.take(g, c)
			took += n
		}
		if took == 0 {
			break
		}
	}
	require.LessOrEqual(t, b.inUse(), 64*c)
	honest := new(share)
	n, _ := b.take(honest, 64*c)
	require.GreaterOrEqual(t, n, 64*c/(2*4), "the fourth connection gets at least limit/(2×4)")

	// A per-connection cap holds whatever the pressure.
	b = newBudget(64*c, 8*c)
	n, _ = b.take(new(share), 64*c)
	require.Equal(t, 8*c, n)

	// A flow that moves to another connection takes its charge along.
	from, to := new(share), new(share)
	b.take(from, 4*c)
	b.move(from, to, 4*c)
	require.Zero(t, from.used)
	require.Equal(t, 4*c, to.used)
	require.Equal(t, 12*c, b.inUse())
}
