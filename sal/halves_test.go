package sal

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSendHalfTransitions walks every event from every send state and
// checks the result against the diagram at the top of flow.go.
func TestSendHalfTransitions(t *testing.T) {
	errFirst, errLater := errors.New("first"), errors.New("later")
	events := map[string]func(s *sendHalf){
		"queueFin": func(s *sendHalf) { s.queueFin() },
		"finAcked": func(s *sendHalf) { s.finAcked() },
		"stop":     func(s *sendHalf) { s.stop(errLater) },
	}
	want := map[sendState]map[string]sendState{
		sendOpen:      {"queueFin": sendFinQueued, "finAcked": sendOpen, "stop": sendStopped},
		sendFinQueued: {"queueFin": sendFinQueued, "finAcked": sendFinAcked, "stop": sendStopped},
		sendFinAcked:  {"queueFin": sendFinAcked, "finAcked": sendFinAcked, "stop": sendFinAcked},
		sendStopped:   {"queueFin": sendStopped, "finAcked": sendStopped, "stop": sendStopped},
	}
	for from, byEvent := range want {
		for event, to := range byEvent {
			s := sendHalf{state: from}
			if from == sendStopped {
				s.err = errFirst
			}
			events[event](&s)
			require.Equal(t, to, s.state, "%v --%s-->", from, event)
			if from == sendStopped {
				require.Equal(t, errFirst, s.err, "a stopped direction keeps its first cause")
			} else if to == sendStopped {
				require.Equal(t, errLater, s.err)
			}
			require.Equal(t, to == sendFinAcked || to == sendStopped, s.done(), "%v done", to)
			require.Equal(t, to == sendFinQueued || to == sendFinAcked, s.finQueued(), "%v finQueued", to)
		}
	}
	s := sendHalf{}
	require.True(t, s.queueFin(), "the first CloseWrite queues the FIN")
	require.False(t, s.queueFin(), "a second one does nothing")
}

// TestRecvHalfTransitions does the same for the receive states.
func TestRecvHalfTransitions(t *testing.T) {
	cause := errors.New("reset")
	events := map[string]func(r *recvHalf){
		"stop":    func(r *recvHalf) { r.stop() },
		"finRead": func(r *recvHalf) { r.finRead() },
		"reset":   func(r *recvHalf) { r.reset(cause) },
	}
	want := map[recvState]map[string]recvState{
		recvOpen:    {"stop": recvStopped, "finRead": recvFinRead, "reset": recvReset},
		recvStopped: {"stop": recvStopped, "finRead": recvFinRead, "reset": recvStopped},
		recvFinRead: {"stop": recvFinRead, "finRead": recvFinRead, "reset": recvFinRead},
		recvReset:   {"stop": recvReset, "finRead": recvReset, "reset": recvReset},
	}
	for from, byEvent := range want {
		for event, to := range byEvent {
			r := recvHalf{state: from}
			events[event](&r)
			require.Equal(t, to, r.state, "%v --%s-->", from, event)
			require.Equal(t, to != recvOpen, r.done(), "%v done", to)
			require.Equal(t, to == recvStopped || to == recvFinRead, r.ended(), "%v ended", to)
			if from == recvOpen && to == recvReset {
				require.Equal(t, cause, r.err)
			}
		}
	}
}

// TestCloseTellsThePeerThoughTheFlowFinishesMeanwhile: the peer's last
// Ack can finish the flow the moment Close lets go of its lock, taking its
// carrier. Close must still tell the peer that this end reads no more, or
// the peer's flow, whose FIN nobody will read, waits for word until its
// connection dies. (The 100,000-flow soak left 1 in 30,000 flows so, for a
// minute.)
func TestCloseTellsThePeerThoughTheFlowFinishesMeanwhile(t *testing.T) {
	_, client, l := pair(t, "closing.demo")
	acc := accept(t, l)
	c, err := client.Dial(testCtx(t), "closing.demo")
	require.NoError(t, err)
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	sc := <-acc
	require.NotNil(t, sc)
	_, err = io.ReadFull(sc, make([]byte, 1))
	require.NoError(t, err)

	require.NoError(t, c.Close()) // the client's FIN and "read no more" are on their way
	testHookClosing = func(closing *Conn) {
		if closing == sc {
			// The client's "read no more" lands right now: with this
			// end's reading over too, the flow finishes.
			sc.acked(readerGone)
		}
	}
	t.Cleanup(func() { testHookClosing = nil })
	require.NoError(t, sc.Close())
	select {
	case <-sc.finished:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's flow did not finish")
	}
	select {
	case <-c.finished:
	case <-time.After(5 * time.Second):
		t.Fatal("the client's flow was never told the server reads no more")
	}
}
