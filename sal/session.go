package sal

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal/internal/wire"
)

// session is one QUIC connection as the SAL sees it, whichever end
// dialed it: the flows it carries, its liveness clock, its part of the
// replay budget and, for a connection a peer dialed, its place in the
// connection limits. A dialed session also has a peer (peer.go), the entry
// that lets flows to the same endpoint share it.
//
// Each end of a session opens one unidirectional control stream, on which
// it sends Acks for the flows the connection carries. Acks are cumulative,
// so only the newest per flow matters: they are coalesced until the writer
// gets to them, and a reader never blocks on a slow control stream.
type session struct {
	h       *Host
	qc      *quic.Conn
	dialer  bool                // this Host dialed qc
	peerKey resolve.Fingerprint // the key the peer proved

	mu      sync.Mutex
	pending map[uint64]uint64 // flow ID → read offset not yet sent
	wake    chan struct{}     // cap 1: pending has entries
	flows   map[*Conn]struct{}
	dead    bool
	// streams counts the streams whose SAL header is being served (see
	// admitStream); with flows, what MaxFlowsPerConn bounds.
	streams int
	// idleAfter, on a connection the peer dialed, is how long it may carry
	// nothing before this Host closes it; idle runs while it does.
	idleAfter time.Duration
	idle      *time.Timer
	idleSince time.Time  // when it last carried nothing
	used      bool       // inbound: the peer has opened a stream on it
	addr      netip.Addr // inbound: the peer's address when it connected (see admitConn)

	// delayed holds the flows whose reads are to be acknowledged when
	// delayTimer fires (ackSoon); spare is the slice for the round after.
	delayed, spare []*Conn
	delayTimer     *time.Timer

	heard heardClock // when the peer was last heard (see lastHeard)
	// wrote counts the stream writes of flow data, which the peer must
	// acknowledge (see watchPath).
	wrote atomic.Uint64

	// share is the connection's part of the Host's replay budget: what
	// the flows it carries keep for the peer (see budget).
	share *share
}

// newSession starts the control stream of a connection; it ends with the
// connection.
func (h *Host) newSession(qc *quic.Conn, dialer bool, peerKey resolve.Fingerprint) *session {
	sess := &session{
		h:       h,
		qc:      qc,
		dialer:  dialer,
		peerKey: peerKey,
		pending: make(map[uint64]uint64),
		wake:    make(chan struct{}, 1),
		flows:   make(map[*Conn]struct{}),
		share:   new(share),
		// Idle from the start, as far as eviction goes (see leastUsed): a
		// new connection is no older than any other.
		idleSince: time.Now(),
	}
	h.wg.Go(sess.writeLoop)
	h.wg.Go(sess.readLoop)
	// When the connection dies, every flow it carries suspends at once,
	// also those that are not reading or writing just now.
	context.AfterFunc(qc.Context(), sess.died)
	return sess
}

func (sess *session) attach(c *Conn) {
	sess.mu.Lock()
	dead := sess.dead
	if !dead {
		sess.flows[c] = struct{}{}
		sess.busyLocked()
	}
	sess.mu.Unlock()
	if dead {
		c.mu.Lock()
		car := c.car
		c.mu.Unlock()
		if car != nil && car.uses(sess) {
			c.suspend(car, context.Cause(sess.qc.Context()))
		}
	}
}

func (sess *session) detach(c *Conn) {
	sess.mu.Lock()
	delete(sess.flows, c)
	sess.maybeIdleLocked()
	sess.mu.Unlock()
}

// flowCount returns how many flows the connection carries.
func (sess *session) flowCount() int {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return len(sess.flows)
}

// flowList returns the flows the connection carries.
func (sess *session) flowList() []*Conn {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	flows := make([]*Conn, 0, len(sess.flows))
	for c := range sess.flows {
		flows = append(flows, c)
	}
	return flows
}

// heartbeat asks the peer for an answer: an Ack for flow 0, which no flow
// has, so the peer only acknowledges the packet (see watchPath). On a
// connection the peer dialed, it also says the connection stands by for
// flows on another path, which keeps it from idling out (heartbeatIn).
func (sess *session) heartbeat() { sess.ack(heartbeatFlow, 0) }

// heartbeatFlow is the flow ID of a heartbeat: dialers never pick 0.
const heartbeatFlow = 0

// heartbeatIn takes a heartbeat from the peer: the connection is in use,
// standing by, so its idle clock starts again.
func (sess *session) heartbeatIn() {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.used = true
	if len(sess.flows)+sess.streams > 0 || sess.dead {
		return
	}
	sess.busyLocked()
	sess.maybeIdleLocked()
}

// admitStream counts a stream the peer opened, unless the connection
// carries max flows and streams already.
func (sess *session) admitStream(max int) bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if len(sess.flows)+sess.streams >= max {
		return false
	}
	sess.streams++
	sess.used = true
	sess.busyLocked()
	return true
}

// unusedConnTimeout is how long a connection a peer dialed may go without
// its first stream before this Host closes it.
const unusedConnTimeout = 5 * time.Second

// streamDone uncounts a stream admitStream counted.
func (sess *session) streamDone() {
	sess.mu.Lock()
	sess.streams--
	sess.maybeIdleLocked()
	sess.mu.Unlock()
}

// startIdle makes this Host close the connection, which the peer dialed,
// once it has carried no flow for after: the peer may hold connections,
// but not ones it does not use.
func (sess *session) startIdle(after time.Duration) {
	sess.mu.Lock()
	sess.idleAfter = after
	sess.maybeIdleLocked()
	sess.mu.Unlock()
}

func (sess *session) busyLocked() {
	if sess.idle != nil {
		sess.idle.Stop()
		sess.idle = nil
	}
}

// usage returns how many flows and streams the connection carries, and
// since when it carries none.
func (sess *session) usage() (load int, idleSince time.Time) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return len(sess.flows) + sess.streams, sess.idleSince
}

func (sess *session) maybeIdleLocked() {
	if len(sess.flows)+sess.streams > 0 {
		return
	}
	sess.idleSince = time.Now()
	if sess.idleAfter <= 0 || sess.dead || sess.idle != nil {
		return
	}
	after := sess.idleAfter
	if !sess.used {
		// A dialer opens its first stream right after the handshake; a
		// connection that carried none soon after is of no use to anyone.
		after = min(after, unusedConnTimeout)
	}
	var t *time.Timer
	t = time.AfterFunc(after, func() {
		sess.mu.Lock()
		still := sess.idle == t && !sess.dead
		sess.mu.Unlock()
		if still {
			sess.h.limits.connsIdleClosed.Add(1)
			sess.qc.CloseWithError(codeIdle, "no flows")
		}
	})
	sess.idle = t
}

// detachCarrier detaches c unless it has meanwhile been attached again
// through a newer carrier on the same connection, or its carrier (car,
// still) has another stream there.
func (sess *session) detachCarrier(c *Conn, car *carrier) {
	c.mu.Lock()
	current := c.car
	c.mu.Unlock()
	if current != nil && current.uses(sess) {
		return
	}
	sess.detach(c)
}

// detachCarrier takes c off every connection car uses (see
// session.detachCarrier).
func (c *Conn) detachCarrier(car *carrier) {
	car.sess.detachCarrier(c, car)
	if car.striped != nil {
		for _, sess := range car.striped.sessions() {
			sess.detachCarrier(c, car)
		}
	}
}

// uses reports whether car has a stream on sess's connection.
func (car *carrier) uses(sess *session) bool {
	return car.sess == sess || car.striped != nil && car.striped.uses(sess)
}

func (sess *session) died() {
	sess.mu.Lock()
	sess.dead = true
	sess.busyLocked()
	flows := make([]*Conn, 0, len(sess.flows))
	for c := range sess.flows {
		flows = append(flows, c)
	}
	sess.mu.Unlock()
	cause := context.Cause(sess.qc.Context())
	for _, c := range flows {
		c.mu.Lock()
		car := c.car
		c.mu.Unlock()
		if car == nil || !car.uses(sess) {
			continue
		}
		if car.sess == sess && classify(cause, sess.h, sess.dialer) == errFlow {
			// (A further stream of a striped carrier only suspends it:
			// the flow goes on over the paths that work.)
			c.lose(cause)
		} else {
			c.suspend(car, cause)
		}
	}
}

// awaitsPeer reports whether a flow on the connection holds bytes the peer
// has not acknowledged reading: then the peer owes an answer, and a
// connection that hears nothing is broken, not merely idle.
func (sess *session) awaitsPeer() bool {
	sess.mu.Lock()
	flows := make([]*Conn, 0, len(sess.flows))
	for c := range sess.flows {
		flows = append(flows, c)
	}
	sess.mu.Unlock()
	for _, c := range flows {
		c.mu.Lock()
		owed := c.send.buf.buffered() > 0
		c.mu.Unlock()
		if owed {
			return true
		}
	}
	return false
}

// ackSoon has c acknowledge its reads within ackDelay. One timer per
// connection serves all its flows, so that a flow keeps no timer of its
// own. The caller does not hold c.mu.
func (sess *session) ackSoon(c *Conn) {
	sess.mu.Lock()
	sess.delayed = append(sess.delayed, c)
	if len(sess.delayed) == 1 {
		if sess.delayTimer == nil {
			sess.delayTimer = time.AfterFunc(ackDelay, sess.ackDelayed)
		} else {
			sess.delayTimer.Reset(ackDelay)
		}
	}
	sess.mu.Unlock()
}

// ackDelayed sends the Acks ackSoon deferred.
func (sess *session) ackDelayed() {
	sess.mu.Lock()
	due := sess.delayed
	sess.delayed, sess.spare = sess.spare[:0], nil
	sess.mu.Unlock()
	for _, c := range due {
		c.sendAck()
	}
	clear(due)
	sess.mu.Lock()
	if sess.spare == nil {
		sess.spare = due[:0] // no allocation for the next round
	}
	sess.mu.Unlock()
}

// ack queues an acknowledgement for the peer.
func (sess *session) ack(flowID, off uint64) {
	sess.mu.Lock()
	if prev, ok := sess.pending[flowID]; !ok || off > prev {
		sess.pending[flowID] = off
	}
	sess.mu.Unlock()
	select {
	case sess.wake <- struct{}{}:
	default:
	}
}

func (sess *session) writeLoop() {
	var s *quic.SendStream
	var buf []byte
	ctx := sess.qc.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.wake:
		}
		sess.mu.Lock()
		buf = buf[:0]
		for id, off := range sess.pending {
			buf = wire.AppendAck(buf, wire.Ack{FlowID: id, ReadOff: off})
		}
		clear(sess.pending)
		sess.mu.Unlock()
		if s == nil {
			var err error
			if s, err = sess.qc.OpenUniStreamSync(ctx); err != nil {
				return
			}
		}
		if _, err := s.Write(buf); err != nil {
			return
		}
	}
}

// readLoop reads the peer's control streams. A peer may open more than one
// (after a restart of its writer, say); each is read to its end.
func (sess *session) readLoop() {
	ctx := sess.qc.Context()
	for {
		s, err := sess.qc.AcceptUniStream(ctx)
		if err != nil {
			return
		}
		sess.h.wg.Go(func() { // (counted: readLoop is, so the Add is safe)
			for {
				a, err := wire.ReadAck(s)
				if err != nil {
					if errors.Is(err, wire.ErrMalformed) {
						s.CancelRead(streamProtocol) // garbage: stop reading this stream
					}
					return
				}
				sess.h.onAck(sess, a)
			}
		})
	}
}

// onAck routes an Ack to its flow. A flow is found only among those this
// Host shares with the Ack's sender, so no peer can touch another's flows.
func (h *Host) onAck(sess *session, a wire.Ack) {
	if a.FlowID == heartbeatFlow {
		sess.heartbeatIn()
		return
	}
	key := flowKey{id: a.FlowID}
	if !sess.dialer {
		key.listener, key.peer = true, sess.peerKey
	}
	c := h.flow(key)
	if c == nil || c.peerKey != sess.peerKey {
		return
	}
	c.acked(a.ReadOff)
}
