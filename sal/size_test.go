package sal

import (
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestConnSize holds a flow's Conn within the 768-byte size class of Go's
// allocator: a server holds one per flow, thousands of them, and the next
// class is 896 bytes. Order fields by size before adding one that breaks
// this (see the Conn type).
func TestConnSize(t *testing.T) {
	require.LessOrEqual(t, unsafe.Sizeof(Conn{}), uintptr(768))
}

// TestFinishedFlowHoldsNoTimer: a deadline an hour away must not keep its
// timer, and the channel it closes, for that hour once the flow is over.
// (A soak of 30,000 flows closed with their deadlines pending kept 14 MiB.)
func TestFinishedFlowHoldsNoTimer(t *testing.T) {
	_, client, l := pair(t, "timer.demo")
	acc := accept(t, l)
	c, err := client.Dial(testCtx(t), "timer.demo")
	require.NoError(t, err)
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	sc := <-acc
	require.NotNil(t, sc)
	for _, f := range []*Conn{c, sc} {
		require.NoError(t, f.SetDeadline(time.Now().Add(time.Hour)))
		require.True(t, hasTimer(f), "a deadline ahead runs a timer")
	}
	require.NoError(t, c.Close())
	require.NoError(t, sc.Close())
	for _, f := range []*Conn{c, sc} {
		select {
		case <-f.finished:
		case <-time.After(10 * time.Second):
			t.Fatal("the flow never finished")
		}
		require.False(t, hasTimer(f), "a finished flow holds no deadline timer")
	}
}

func hasTimer(c *Conn) bool {
	c.recv.dl.mu.Lock()
	r := c.recv.dl.timer != nil
	c.recv.dl.mu.Unlock()
	c.send.dl.mu.Lock()
	s := c.send.dl.timer != nil
	c.send.dl.mu.Unlock()
	return r || s
}

// TestAckAllocatesNothing holds the promise that Acks cost no allocation:
// a flow's read offset is coalesced per connection (session.ack), and a
// delayed Ack joins the connection's one timer (ackSoon) in a reused
// slice.
func TestAckAllocatesNothing(t *testing.T) {
	_, client, l := pair(t, "acks.demo")
	acc := accept(t, l)
	c, err := client.Dial(testCtx(t), "acks.demo")
	require.NoError(t, err)
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	sc := <-acc
	require.NotNil(t, sc)
	sc.mu.Lock()
	sess := sc.car.sess
	sc.mu.Unlock()

	sess.ack(sc.flowID, 1) // the first entry may grow the map
	off := uint64(1)
	require.Zero(t, testing.AllocsPerRun(1000, func() {
		off++
		sess.ack(sc.flowID, off)
	}), "session.ack")

	sess.ackSoon(sc)
	time.Sleep(4 * ackDelay) // the first round made the slices
	require.Zero(t, testing.AllocsPerRun(100, func() {
		sess.mu.Lock()
		sess.delayed = append(sess.delayed, sc)
		sess.mu.Unlock()
		sess.ackDelayed()
	}), "a round of delayed Acks")
}
