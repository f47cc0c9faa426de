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
			n := rng.IntN(3 * chunkSize)
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
		require.LessOrEqual(t, len(b.chunks), len(model)/chunkSize+2, "chunks must be given back")
	}
	require.Equal(t, len(model), b.release())
	require.Nil(t, b.chunks)
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
	b := newBudget(100)
	n, _ := b.take(60)
	require.Equal(t, 60, n)
	n, wait := b.take(60)
	require.Equal(t, 40, n)
	n, _ = b.take(1)
	require.Equal(t, 0, n)
	b.give(50)
	select {
	case <-wait:
	default:
		t.Fatal("give must wake waiters")
	}
	require.Equal(t, 50, b.inUse())
}
