package sal

import (
	"sync"
	"time"
)

// A flow has two directions, each ending on its own, as a QUIC stream's
// send and receive parts do (quic-go's send_stream and receive_stream).
// sendHalf and recvHalf hold them. Each has its own lock for the I/O it
// serializes: send.lock for Writes, flushes and the FIN; recv.mu for
// reading a carrier and accounting for what was read. Their states and
// the fields marked so are guarded by Conn.mu, with the flow's state, since
// the transitions that end a flow (install, suspend, maybeFinish) read
// both directions at once. The transitions are drawn, and the lock order
// written, at the top of flow.go.

type sendState uint8

const (
	sendOpen      sendState = iota // Write accepts data
	sendFinQueued                  // CloseWrite or Close: the FIN follows the data
	sendFinAcked                   // the peer read the FIN: the direction is complete
	sendStopped                    // the peer stopped reading: writes fail for good
)

var sendStateNames = [...]string{"open", "fin-queued", "fin-acked", "stopped"}

func (s sendState) String() string { return sendStateNames[s] }

type recvState uint8

const (
	recvOpen    recvState = iota // the peer's data is wanted
	recvStopped                  // Close or CloseRead: the peer's data is unwanted
	recvFinRead                  // Read returned io.EOF
	recvReset                    // the peer reset its side: reads fail for good
)

var recvStateNames = [...]string{"open", "stopped", "fin-read", "reset"}

func (s recvState) String() string { return recvStateNames[s] }

// sendHalf is the flow's outgoing direction.
type sendHalf struct {
	// lock serializes Writes, flushes and the FIN; a channel, so that
	// waiting for it honours deadlines. It guards each carrier's sent.
	lock chan struct{}
	dl   deadline // the write deadline Writes wait on

	// Guarded by Conn.mu:
	err      error     // sendStopped: why writes fail
	deadline time.Time // the user's write deadline, for carriers to come
	buf      sendBuffer
	ackedAt  time.Time // when the peer last acknowledged new data (see checkStall)
	state    sendState
	flush    flushState
	// flusherOwnsDeadline: the background flush cleared the stream's write
	// deadline to deliver data already accepted; SetWriteDeadline records
	// the user's deadline for after it.
	flusherOwnsDeadline bool
}

// flushState says whether a background flush runs (kick).
type flushState uint8

const (
	flushIdle    flushState = iota
	flushRunning            // a background flush runs
	flushAgain              // kicked while a flush ran: it must look again before it stops
)

// queueFin asks for the FIN after the data, and reports whether the
// direction was open.
func (s *sendHalf) queueFin() bool {
	if s.state != sendOpen {
		return false
	}
	s.state = sendFinQueued
	return true
}

// finQueued reports whether the FIN follows the data.
func (s *sendHalf) finQueued() bool { return s.state == sendFinQueued || s.state == sendFinAcked }

// finAcked records that the peer read up to and including the FIN.
func (s *sendHalf) finAcked() {
	if s.state == sendFinQueued {
		s.state = sendFinAcked
	}
}

// stop records that the peer reads no more: err is what Writes get. A
// direction already complete stays so.
func (s *sendHalf) stop(err error) {
	if s.state == sendOpen || s.state == sendFinQueued {
		s.state, s.err = sendStopped, err
	}
}

// done reports whether the direction needs nothing more: the peer read the
// FIN, or reads no more.
func (s *sendHalf) done() bool { return s.state == sendFinAcked || s.state == sendStopped }

// recvHalf is the flow's incoming direction.
type recvHalf struct {
	// mu serializes reading from a carrier with accounting for it, so that
	// a resume that needs the read offset waits until the bytes read are
	// counted. It guards each carrier's skip.
	mu sync.Mutex
	dl deadline // the read deadline Reads wait on

	// Guarded by Conn.mu:
	err      error     // recvReset: why reads fail
	deadline time.Time // the user's read deadline, for carriers to come
	off      uint64    // data bytes Read delivered
	ackSent  uint64    // the read offset last acknowledged to the peer
	state    recvState
	ackArmed bool // an Ack for reads already made is due (see Conn.delivered)
}

// stop records that this end reads no more.
func (r *recvHalf) stop() {
	if r.state == recvOpen {
		r.state = recvStopped
	}
}

// finRead records that Read returned io.EOF. A Read already under way
// when CloseRead came can still meet the FIN; it counts, so that the
// peer learns its FIN was read.
func (r *recvHalf) finRead() {
	if r.state == recvOpen || r.state == recvStopped {
		r.state = recvFinRead
	}
}

// reset records that the peer reset its side: err is what Reads get.
func (r *recvHalf) reset(err error) {
	if r.state == recvOpen {
		r.state, r.err = recvReset, err
	}
}

// done reports whether the direction needs nothing more.
func (r *recvHalf) done() bool { return r.state != recvOpen }

// ended reports whether this end will read no more from any carrier: it
// stopped, or it read the FIN. (After a reset the peer sends nothing.)
func (r *recvHalf) ended() bool { return r.state == recvStopped || r.state == recvFinRead }
