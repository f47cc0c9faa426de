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

// control is a connection's side channel: each end opens one
// unidirectional stream on which it sends Acks for the flows the
// connection carries. Acks are cumulative, so only the newest per flow
// matters: they are coalesced until the writer gets to them, and a
// reader never blocks on a slow control stream.
type control struct {
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

	heard heardClock // when the peer was last heard (see lastHeard)
	// wrote counts the stream writes of flow data, which the peer must
	// acknowledge (see watchPath).
	wrote atomic.Uint64

	// share is the connection's part of the Host's replay budget: what
	// the flows it carries keep for the peer (see budget).
	share *share
}

// newControl starts the control channel of a connection; it ends with the
// connection.
func (h *Host) newControl(qc *quic.Conn, dialer bool, peerKey resolve.Fingerprint) *control {
	ctl := &control{
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
	h.wg.Go(ctl.writeLoop)
	h.wg.Go(ctl.readLoop)
	// When the connection dies, every flow it carries suspends at once,
	// also those that are not reading or writing just now.
	context.AfterFunc(qc.Context(), ctl.died)
	return ctl
}

func (ctl *control) attach(c *Conn) {
	ctl.mu.Lock()
	dead := ctl.dead
	if !dead {
		ctl.flows[c] = struct{}{}
		ctl.busyLocked()
	}
	ctl.mu.Unlock()
	if dead {
		c.mu.Lock()
		car := c.car
		c.mu.Unlock()
		if car != nil && car.uses(ctl) {
			c.suspend(car, context.Cause(ctl.qc.Context()))
		}
	}
}

func (ctl *control) detach(c *Conn) {
	ctl.mu.Lock()
	delete(ctl.flows, c)
	ctl.maybeIdleLocked()
	ctl.mu.Unlock()
}

// flowCount returns how many flows the connection carries.
func (ctl *control) flowCount() int {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	return len(ctl.flows)
}

// flowList returns the flows the connection carries.
func (ctl *control) flowList() []*Conn {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	flows := make([]*Conn, 0, len(ctl.flows))
	for c := range ctl.flows {
		flows = append(flows, c)
	}
	return flows
}

// heartbeat asks the peer for an answer: an Ack for flow 0, which no flow
// has, so the peer only acknowledges the packet (see watchPath). On a
// connection the peer dialed, it also says the connection stands by for
// flows on another path, which keeps it from idling out (heartbeatIn).
func (ctl *control) heartbeat() { ctl.ack(heartbeatFlow, 0) }

// heartbeatFlow is the flow ID of a heartbeat: dialers never pick 0.
const heartbeatFlow = 0

// heartbeatIn takes a heartbeat from the peer: the connection is in use,
// standing by, so its idle clock starts again.
func (ctl *control) heartbeatIn() {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	ctl.used = true
	if len(ctl.flows)+ctl.streams > 0 || ctl.dead {
		return
	}
	ctl.busyLocked()
	ctl.maybeIdleLocked()
}

// admitStream counts a stream the peer opened, unless the connection
// carries max flows and streams already.
func (ctl *control) admitStream(max int) bool {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if len(ctl.flows)+ctl.streams >= max {
		return false
	}
	ctl.streams++
	ctl.used = true
	ctl.busyLocked()
	return true
}

// unusedConnTimeout is how long a connection a peer dialed may go without
// its first stream before this Host closes it.
const unusedConnTimeout = 5 * time.Second

// streamDone uncounts a stream admitStream counted.
func (ctl *control) streamDone() {
	ctl.mu.Lock()
	ctl.streams--
	ctl.maybeIdleLocked()
	ctl.mu.Unlock()
}

// startIdle makes this Host close the connection, which the peer dialed,
// once it has carried no flow for after: the peer may hold connections,
// but not ones it does not use.
func (ctl *control) startIdle(after time.Duration) {
	ctl.mu.Lock()
	ctl.idleAfter = after
	ctl.maybeIdleLocked()
	ctl.mu.Unlock()
}

func (ctl *control) busyLocked() {
	if ctl.idle != nil {
		ctl.idle.Stop()
		ctl.idle = nil
	}
}

// usage returns how many flows and streams the connection carries, and
// since when it carries none.
func (ctl *control) usage() (load int, idleSince time.Time) {
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	return len(ctl.flows) + ctl.streams, ctl.idleSince
}

func (ctl *control) maybeIdleLocked() {
	if len(ctl.flows)+ctl.streams > 0 {
		return
	}
	ctl.idleSince = time.Now()
	if ctl.idleAfter <= 0 || ctl.dead || ctl.idle != nil {
		return
	}
	after := ctl.idleAfter
	if !ctl.used {
		// A dialer opens its first stream right after the handshake; a
		// connection that carried none soon after is of no use to anyone.
		after = min(after, unusedConnTimeout)
	}
	var t *time.Timer
	t = time.AfterFunc(after, func() {
		ctl.mu.Lock()
		still := ctl.idle == t && !ctl.dead
		ctl.mu.Unlock()
		if still {
			ctl.h.limits.connsIdleClosed.Add(1)
			ctl.qc.CloseWithError(codeIdle, "no flows")
		}
	})
	ctl.idle = t
}

// detachCarrier detaches c unless it has meanwhile been attached again
// through a newer carrier on the same connection, or its carrier (car,
// still) has another stream there.
func (ctl *control) detachCarrier(c *Conn, car *carrier) {
	c.mu.Lock()
	current := c.car
	c.mu.Unlock()
	if current != nil && current.uses(ctl) {
		return
	}
	ctl.detach(c)
}

// detachCarrier takes c off every connection car uses (see
// control.detachCarrier).
func (c *Conn) detachCarrier(car *carrier) {
	car.ctl.detachCarrier(c, car)
	if car.striped != nil {
		for _, ctl := range car.striped.controls() {
			ctl.detachCarrier(c, car)
		}
	}
}

// uses reports whether car has a stream on ctl's connection.
func (car *carrier) uses(ctl *control) bool {
	return car.ctl == ctl || car.striped != nil && car.striped.uses(ctl)
}

func (ctl *control) died() {
	ctl.mu.Lock()
	ctl.dead = true
	ctl.busyLocked()
	flows := make([]*Conn, 0, len(ctl.flows))
	for c := range ctl.flows {
		flows = append(flows, c)
	}
	ctl.mu.Unlock()
	cause := context.Cause(ctl.qc.Context())
	for _, c := range flows {
		c.mu.Lock()
		car := c.car
		c.mu.Unlock()
		if car == nil || !car.uses(ctl) {
			continue
		}
		if car.ctl == ctl && classify(cause, ctl.h, ctl.dialer) == errFlow {
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
func (ctl *control) awaitsPeer() bool {
	ctl.mu.Lock()
	flows := make([]*Conn, 0, len(ctl.flows))
	for c := range ctl.flows {
		flows = append(flows, c)
	}
	ctl.mu.Unlock()
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

// ack queues an acknowledgement for the peer.
func (ctl *control) ack(flowID, off uint64) {
	ctl.mu.Lock()
	if prev, ok := ctl.pending[flowID]; !ok || off > prev {
		ctl.pending[flowID] = off
	}
	ctl.mu.Unlock()
	select {
	case ctl.wake <- struct{}{}:
	default:
	}
}

func (ctl *control) writeLoop() {
	var s *quic.SendStream
	var buf []byte
	ctx := ctl.qc.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ctl.wake:
		}
		ctl.mu.Lock()
		buf = buf[:0]
		for id, off := range ctl.pending {
			buf = wire.AppendAck(buf, wire.Ack{FlowID: id, ReadOff: off})
		}
		clear(ctl.pending)
		ctl.mu.Unlock()
		if s == nil {
			var err error
			if s, err = ctl.qc.OpenUniStreamSync(ctx); err != nil {
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
func (ctl *control) readLoop() {
	ctx := ctl.qc.Context()
	for {
		s, err := ctl.qc.AcceptUniStream(ctx)
		if err != nil {
			return
		}
		ctl.h.wg.Go(func() { // (counted: readLoop is, so the Add is safe)
			for {
				a, err := wire.ReadAck(s)
				if err != nil {
					if errors.Is(err, wire.ErrMalformed) {
						s.CancelRead(streamProtocol) // garbage: stop reading this stream
					}
					return
				}
				ctl.h.onAck(ctl, a)
			}
		})
	}
}

// onAck routes an Ack to its flow. A flow is found only among those this
// Host shares with the Ack's sender, so no peer can touch another's flows.
func (h *Host) onAck(ctl *control, a wire.Ack) {
	if a.FlowID == heartbeatFlow {
		ctl.heartbeatIn()
		return
	}
	key := flowKey{id: a.FlowID}
	if !ctl.dialer {
		key.listener, key.peer = true, ctl.peerKey
	}
	c := h.flow(key)
	if c == nil || c.peerKey != ctl.peerKey {
		return
	}
	c.acked(a.ReadOff)
}
