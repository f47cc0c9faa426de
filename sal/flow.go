package sal

// The flow state machine. A flow's state lives in its Conn, guarded by
// Conn.mu, and changes only through the functions of this file:
//
//	flowActive --suspend--> flowSuspended --install--> flowActive
//	flowActive --maybeFinish--> flowDone
//	flowActive, flowSuspended --lose--> flowLost
//
//   - suspend: the carrier failed, or (serveResume) a resume replaced it;
//     detachLocked and dropDetached are its one detach step.
//   - install: the first carrier, or a resume's: the dialer's resumeLoop
//     and the listener's serveResume (resume.go) end in it.
//   - lose: no resume by ResumeTimeout (resumeLoop; awaitResume at the
//     listener), a refused resume, a peer gone for good, the Host closing.
//   - maybeFinish: both directions are over.
//
// flowDone and flowLost are final: release gives back all the flow holds.
//
// Each direction has its own state (sendHalf and recvHalf, halves.go),
// changed only by the methods beside them:
//
//	sendOpen --CloseWrite, Close--> sendFinQueued --the peer reads the FIN--> sendFinAcked
//	sendOpen, sendFinQueued --the peer stops reading--> sendStopped
//
//	recvOpen --CloseRead, Close--> recvStopped
//	recvOpen, recvStopped --Read returns io.EOF--> recvFinRead
//	recvOpen --the peer resets its side--> recvReset
//
// A direction is done in every state but sendOpen, sendFinQueued and
// recvOpen; maybeFinish moves the flow to flowDone once both are.
//
// Lock order: Conn.send.lock (a channel: one writer), Conn.recv.mu and
// Conn.resumeMu, then Conn.mu, then Host.mu, then the budget's mu. A
// session's mu and Conn.mu are never held together; limiter.mu comes
// before a session's mu (see leastUsed); striped.mu comes last, after
// Conn.mu (stripe.go). No lock is held across network I/O: writes to a
// stream happen with the write lock alone, and a resolver's Watch opens
// outside Host.mu (follow.go).

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal/internal/wire"
)

const secretLen = wire.SecretLen

type flowState uint8

const (
	flowActive    flowState = iota // a carrier is installed
	flowSuspended                  // the carrier failed; a resume is awaited
	flowLost                       // resume failed, or the peer is gone for good
	flowDone                       // both directions completed
)

// flowKey names a flow in its Host. A dialer's flow IDs are unique in its
// Host; a listener's are unique per dialing key, so one dialer can never
// name another's flow.
type flowKey struct {
	listener bool
	peer     resolve.Fingerprint
	id       uint64
}

// resumeTag proves knowledge of a flow's secret for one resume generation.
func resumeTag(secret [secretLen]byte, flowID, gen uint64) [secretLen]byte {
	m := hmac.New(sha256.New, secret[:])
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], flowID)
	binary.BigEndian.PutUint64(b[8:], gen)
	m.Write(b[:])
	var tag [secretLen]byte
	m.Sum(tag[:0])
	return tag
}

// install makes car the flow's carrier: for a first carrier, once the
// flow is registered; for later ones, on resume. The stream gets the
// flow's deadlines; if this end no longer reads, it says so at once. It
// reports false, and drops car, if the flow is already over.
func (c *Conn) install(car *carrier) bool {
	c.mu.Lock()
	if c.state == flowLost || c.state == flowDone {
		c.mu.Unlock()
		dropCarrier(car, streamMoved)
		return false
	}
	old := c.car
	c.car = car
	if car.striped != nil {
		car.striped.flow = c // before any further stream can join (see leave)
	}
	if c.share != car.sess.share {
		// The flow's memory is now the new connection's to account for.
		if c.share != nil {
			c.h.budget.move(c.share, car.sess.share, c.charged)
		}
		c.share = car.sess.share
	}
	wasSuspended := c.state == flowSuspended && !c.suspended.IsZero()
	c.state = flowActive
	c.remoteEnd = car.remoteAddr()
	if wasSuspended {
		car.replay = c.send.buf.end - min(car.sent, c.send.buf.end)
		if car.ready == nil {
			c.resumedLocked(car)
		} // else a dialer's resume: it counts once the Reply is in (resumeAt)
	}
	if car.ready == nil {
		// A carrier with a Reply to come gets the read deadline after it,
		// so that no deadline can cut a Reply in half (see replyIn).
		car.s.SetReadDeadline(c.recv.deadline)
	}
	car.s.SetWriteDeadline(c.send.deadline)
	readClosed := c.recv.ended()
	if readClosed {
		c.recv.ackSent = 0 // tell the peer again, on this carrier, how far we read
	}
	c.broadcastLocked()
	c.mu.Unlock()

	if old != nil && old != car {
		dropCarrier(old, streamMoved)
	}
	if readClosed && car.ready == nil {
		// (A carrier that still has a Reply to deliver says so after it;
		// see readDone.)
		car.s.CancelRead(streamClosed)
	}
	car.sess.attach(c)
	if readClosed && car.ready == nil {
		c.sendAck()
	}
	c.kick()
	return true
}

// replyIn marks a dialer carrier's Reply as read: from now on its stream
// carries only data and takes the flow's read deadline.
func (c *Conn) replyIn(car *carrier) {
	c.mu.Lock()
	// Under mu, so that SetReadDeadline sees either a pending Reply (and
	// leaves the stream alone) or this deadline applied.
	car.s.SetReadDeadline(c.recv.deadline)
	close(car.ready)
	c.mu.Unlock()
	if car.striped != nil {
		car.striped.startReading()
	}
	c.readDone(car)
	c.sendAck()
	c.addStripes(car)
}

// readDone tells the peer, once car's Reply is in, that this end reads
// no more from it, if so.
func (c *Conn) readDone(car *carrier) {
	c.mu.Lock()
	done := c.recv.ended()
	c.mu.Unlock()
	if done {
		car.s.CancelRead(streamClosed)
	}
}

// resumedLocked counts a completed resume onto car: an attempt whose
// Reply never came counts neither its replay nor its stall.
func (c *Conn) resumedLocked(car *carrier) {
	c.stats.BytesReplayed += car.replay
	c.stats.Resumes++
	c.acct.resumes.Add(1)
	c.endStallLocked()
}

// endStallLocked accounts for the time the flow had no working carrier.
func (c *Conn) endStallLocked() {
	stall := time.Since(c.suspended)
	c.stats.Stalled += stall
	c.stats.LastStall = stall
}

// dropCarrier ends a carrier's stream with code (streamMoved: the flow
// goes on elsewhere; streamLost: the flow is over) and gives back what the
// carrier held.
func dropCarrier(car *carrier, code quic.StreamErrorCode) {
	car.s.CancelRead(code)
	car.s.CancelWrite(code)
	if car.striped != nil {
		car.striped.release()
	}
	if car.peer != nil {
		car.peer.host.releasePeer(car.peer)
	}
}

// quicConn returns the connection carrying the flow now, or nil.
func (c *Conn) quicConn() *quic.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.car == nil {
		return nil
	}
	return c.car.sess.qc
}

// carrierError decides what an error from car's stream means: a failed
// carrier (the flow suspends and resumes; it returns true), or the end of
// one direction or of the whole flow (it returns false, and the caller
// reports readErr or writeErr).
func (c *Conn) carrierError(car *carrier, err error, writing bool) bool {
	switch classify(err, c.h, c.dialer) {
	case errCarrier:
		c.suspend(car, err)
		return true
	case errFlow:
		var se *quic.StreamError
		if errors.As(err, &se) && se.ErrorCode == streamRejected {
			err = fmt.Errorf("%w: %w", ErrRefused, err)
		}
		if errors.As(err, &se) && se.ErrorCode == streamStalled {
			err = fmt.Errorf("%w: the peer reset the flow: %w", ErrStalled, err)
		}
		c.lose(err)
	case errDirection:
		var se *quic.StreamError
		if errors.As(err, &se) && !se.Remote {
			return false // our own CloseRead or Close; Read reports net.ErrClosed
		}
		c.mu.Lock()
		if c.car == car {
			if writing {
				c.send.stop(fmt.Errorf("%w: %w", ErrPeerClosed, err))
				c.send.buf.ack(c.send.buf.end) // keep the offsets: a resume still needs them
			} else {
				c.recv.reset(err)
			}
			c.broadcastLocked()
		}
		sh, freed := c.freedLocked()
		c.mu.Unlock()
		c.h.budget.give(sh, freed)
		c.maybeFinish()
	}
	return false
}

type errKind uint8

const (
	errCarrier   errKind = iota // the stream or connection failed: resume
	errDirection                // the peer ended one direction (reset or stop-sending)
	errFlow                     // the flow cannot go on
)

// classify sorts the errors quic-go reports on a flow's stream, at the
// dialing end of the flow or the listening one.
func classify(err error, h *Host, dialer bool) errKind {
	var se *quic.StreamError
	if errors.As(err, &se) {
		switch se.ErrorCode {
		case streamMoved:
			return errCarrier
		case streamLost, streamRejected, streamStalled:
			return errFlow
		}
		return errDirection
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.ErrorCode == codeHostClosed {
		return errFlow // the peer shut down on purpose, or we did
	}
	if ae != nil && ae.Remote && ae.ErrorCode == codeLimit {
		return errFlow // the peer refused the connection over a limit
	}
	if !dialer && ae != nil && ae.Remote && ae.ErrorCode != codeMoved {
		// The dialer closed the connection, and not to move: none of its
		// flows will resume, so their memory goes back now rather than
		// after ResumeTimeout (a client that fills buffers and leaves must
		// not hold them that long).
		return errFlow
	}
	if h.isClosed() {
		return errFlow
	}
	// Idle timeouts, stateless resets, a Host that moved (codeMoved),
	// transport errors, a dead socket: the path or the connection is gone,
	// the flow need not be.
	return errCarrier
}

func (c *Conn) readErr(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.recv.state == recvReset:
		return c.recv.err
	case c.state == flowLost:
		return c.lostErr
	case c.recv.state == recvStopped:
		return net.ErrClosed
	}
	return err
}

func (c *Conn) writeErr(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.send.state == sendStopped:
		return c.send.err
	case c.state == flowLost:
		return c.lostErr
	}
	return err
}

// endErr is why a finished flow can do no more I/O.
func (c *Conn) endErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endErrLocked()
}

func (c *Conn) endErrLocked() error {
	if c.state == flowLost {
		return c.lostErr
	}
	return net.ErrClosed
}

// suspend detaches a failed carrier. The dialer starts resuming; the
// listener waits for a resume. Either gives up once Config.ResumeTimeout
// has passed since the peer was last heard on the carrier's connection.
func (c *Conn) suspend(car *carrier, cause error) {
	if !c.dialer && c.secret == ([secretLen]byte{}) {
		// The dialer sent no resume secret, so no resume can prove it is
		// the dialer (see serveResume): the flow cannot outlive its carrier,
		// and keeping its memory for ResumeTimeout would serve no one.
		if c.current(car) {
			c.lose(fmt.Errorf("%w (not resumable: the dialer sent no resume secret)", cause))
		}
		return
	}
	now := time.Now()
	heard := car.sess.lastHeard(cause, now) // before mu: it asks quic-go
	c.mu.Lock()
	if c.car != car || c.state != flowActive {
		c.mu.Unlock()
		return
	}
	c.detachLocked(car, now, heard.Add(c.h.cfg.resumeTimeout()))
	startResume := c.dialer && !c.resuming
	if startResume {
		c.resuming = true
	}
	c.mu.Unlock()

	c.dropDetached(car, cause)
	if startResume {
		// Under h.mu, as Close sets closed before it waits; a closing Host
		// ends the flow itself (it was registered before closed was set).
		c.h.mu.Lock()
		if !c.h.closed {
			c.h.wg.Go(func() { c.resumeLoop(cause) })
		}
		c.h.mu.Unlock()
	} else if !c.dialer {
		c.awaitResume(cause)
	}
}

// detachLocked takes car, the flow's carrier, away and suspends the flow
// until resumeBy: the one detach step of both a carrier that failed
// (suspend) and a carrier that a resume replaces (serveResume). c.mu must
// be held; dropDetached finishes the job once it is released.
func (c *Conn) detachLocked(car *carrier, now, resumeBy time.Time) {
	c.remoteEnd = car.remoteAddr()
	c.car = nil
	c.state = flowSuspended
	c.suspended = now
	c.resumeBy = resumeBy
	c.broadcastLocked()
}

// dropDetached closes a carrier detachLocked took away, off every
// connection it used, and reports the suspension.
func (c *Conn) dropDetached(car *carrier, cause error) {
	c.detachCarrier(car)
	dropCarrier(car, streamMoved)
	c.h.emit(Event{Kind: EventSuspended, Service: c.service, FlowID: c.flowID, Err: cause})
	c.h.log.Debug("flow suspended", "service", c.service, "flow", c.flowID, "cause", cause)
}

// awaitResume ends a suspended listener flow that no resume reached by its
// resumeBy.
func (c *Conn) awaitResume(cause error) {
	c.mu.Lock()
	by := c.resumeBy
	c.mu.Unlock()
	time.AfterFunc(time.Until(by), func() {
		c.mu.Lock()
		// A later suspension may have moved resumeBy: its own timer decides.
		expired := c.state == flowSuspended && !time.Now().Before(c.resumeBy)
		c.mu.Unlock()
		if expired {
			c.lose(fmt.Errorf("%w: %w", c.h.resumeExpired(), cause))
		}
	})
}

// reject ends a flow that no application will see: its Listener closed
// before accepting it. The dialer sees its stream reset.
func (c *Conn) reject() {
	c.mu.Lock()
	car := c.car
	c.mu.Unlock()
	if car != nil {
		car.s.CancelRead(streamRejected)
		car.s.CancelWrite(streamRejected)
	}
	c.lose(ErrRefused)
}

// lose ends the flow for good: I/O fails with an error wrapping
// ErrFlowLost and cause.
func (c *Conn) lose(cause error) {
	cause = limitFromClose(cause) // a refusal over a limit says which
	c.mu.Lock()
	if c.state == flowLost || c.state == flowDone {
		c.mu.Unlock()
		return
	}
	if errors.Is(cause, ErrFlowLost) {
		c.lostErr = cause
	} else {
		c.lostErr = fmt.Errorf("%w: %w", ErrFlowLost, cause)
	}
	c.state = flowLost
	c.mu.Unlock()
	c.h.emit(Event{Kind: EventLost, Service: c.service, FlowID: c.flowID, Err: cause})
	c.h.log.Debug("flow lost", "service", c.service, "flow", c.flowID, "cause", cause)
	c.release()
}

// maybeFinish releases the flow once both directions are complete: the
// peer acknowledged our FIN (or stopped reading), and we read its FIN (or
// stopped reading).
func (c *Conn) maybeFinish() {
	c.mu.Lock()
	if !c.send.done() || !c.recv.done() || c.state == flowLost || c.state == flowDone {
		c.mu.Unlock()
		return
	}
	c.state = flowDone
	c.mu.Unlock()
	c.release()
}

// release gives back everything a finished or lost flow holds.
func (c *Conn) release() {
	c.mu.Lock()
	c.countEndLocked()
	car := c.car
	if car != nil {
		c.remoteEnd = car.remoteAddr() // keep the last address seen
	}
	c.car = nil
	c.send.buf.release()
	sh, freed := c.freedLocked()
	c.broadcastLocked()
	c.mu.Unlock()
	c.h.budget.give(sh, freed)
	if car != nil {
		car.sess.detach(c)
		if car.striped != nil {
			for _, sess := range car.striped.sessions() {
				sess.detach(c)
			}
		}
		if c.state == flowLost {
			dropCarrier(car, streamLost)
		} else {
			// A finished flow's stream ended cleanly in both directions.
			if car.striped != nil {
				car.striped.CancelRead(streamClosed) // its receivers may wait on a further stream's end
				car.striped.release()
			}
			if car.peer != nil {
				car.peer.host.releasePeer(car.peer)
			}
		}
	}
	c.recv.dl.stop()
	c.send.dl.stop()
	c.h.forgetFlow(c)
	c.h.unfollow(c)
	select {
	case <-c.finished:
	default:
		close(c.finished)
	}
	c.endContext()
}

// ackEvery is how much a reader consumes before it acknowledges at once;
// what it reads otherwise is acknowledged ackDelay after the first read.
const (
	ackDelay = 5 * time.Millisecond
)

func (c *Conn) ackEvery() uint64 { return uint64(max(c.h.cfg.flowBuffer()/8, 16<<10)) }

// delivered accounts for n bytes Read returned and acknowledges them when
// enough have accumulated.
func (c *Conn) delivered(n int) {
	c.mu.Lock()
	c.recv.off += uint64(n)
	c.stats.BytesRead += uint64(n)
	c.acct.received.Add(uint64(n))
	due := c.recv.off-c.recv.ackSent >= c.ackEvery()
	// The timer runs from the first read it covers, not the last: pushed
	// back by every read, a steady stream would be acknowledged only each
	// ackEvery bytes, and a resume would replay up to that much that the
	// peer had already read (a 1 MiB replay stalled a 20 Mbit/s flow for
	// up to 0.4 s after a server move).
	var later *session
	if !due && !c.recv.ackArmed && c.car != nil {
		// (Without a carrier there is nobody to tell; a resume carries
		// the read offset.)
		c.recv.ackArmed = true
		later = c.car.sess
	}
	c.mu.Unlock()
	switch {
	case due:
		c.sendAck()
	case later != nil:
		later.ackSoon(c)
	}
}

// deliveredFin accounts for the io.EOF Read returned.
func (c *Conn) deliveredFin() {
	c.mu.Lock()
	c.recv.finRead()
	c.broadcastLocked()
	sess, off, ack := c.ackLocked()
	c.mu.Unlock()
	if ack {
		sess.ack(c.flowID, off)
	}
	c.maybeFinish()
}

// readerGone is the read offset an Ack carries once this end reads no
// more (Close, CloseRead): the peer can drop what it keeps and stop writing.
const readerGone = ^uint64(0)

// sendAck tells the peer how far this end has read, counting the FIN as a
// byte, so it can free what it keeps for replay.
func (c *Conn) sendAck() {
	c.mu.Lock()
	sess, off, ok := c.ackLocked()
	c.mu.Unlock()
	if ok {
		sess.ack(c.flowID, off)
	}
}

// ackLocked decides the Ack that tells the peer how far this end has
// read, and counts it sent: the caller sends it with sess.ack once c.mu is
// released. ok is false when there is nothing new to say, or no carrier to
// say it on.
//
// A transition that ends this end's reading (Close, CloseRead, Read's
// io.EOF) decides its Ack under the same lock: the flow may finish, and
// lose its carrier, the moment the lock is released (a peer's Ack that
// completes the other direction, say), and the peer, never told, would
// wait to hear it until ResumeTimeout.
func (c *Conn) ackLocked() (sess *session, off uint64, ok bool) {
	c.recv.ackArmed = false
	off = c.recv.off
	switch c.recv.state {
	case recvFinRead:
		off++
	case recvStopped:
		off = readerGone
	}
	if off == c.recv.ackSent || c.car == nil {
		return nil, 0, false
	}
	c.recv.ackSent = off
	return c.car.sess, off, true
}

// acked handles the peer's acknowledgement that it read up to off.
func (c *Conn) acked(off uint64) {
	c.mu.Lock()
	if off == readerGone {
		c.send.stop(ErrPeerClosed)
		c.send.buf.ack(c.send.buf.end) // free it all, but keep the offsets a resume checks
		sh, freed := c.freedLocked()
		c.broadcastLocked()
		c.mu.Unlock()
		c.h.budget.give(sh, freed)
		c.maybeFinish()
		return
	}
	if off > c.send.buf.end+1 {
		off = c.send.buf.end + 1 // a peer cannot have read more than we sent
	}
	progress := c.send.buf.ack(off)
	if progress > 0 {
		c.send.ackedAt = time.Now()
	}
	if car := c.car; car != nil && car.striped != nil && off > car.base {
		car.striped.ackedTo(off - car.base) // the stripes window moves on
	}
	if off > c.send.buf.end {
		c.send.finAcked()
	}
	if progress > 0 || c.send.state == sendFinAcked {
		c.broadcastLocked()
	}
	sh, freed := c.freedLocked()
	c.mu.Unlock()
	c.h.budget.give(sh, freed)
	c.maybeFinish()
}

// freedLocked returns the memory the flow's replay buffer gave up since it
// was last charged, and the share to give it back to once c.mu is released.
func (c *Conn) freedLocked() (*share, int) {
	n := c.charged - c.send.buf.capacity()
	c.charged -= n
	return c.share, n
}
