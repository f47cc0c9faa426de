package sal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Write writes data to the flow. It returns once all of b is buffered for
// delivery and handed to the current stream; while the flow resumes, while
// the peer has not acknowledged Config.FlowBuffer bytes, and while the
// flows of its connection hold their share of HostBuffer (ConnBuffer), it
// waits, within its deadline; a peer that takes the data but acknowledges
// none of it for StallTimeout ends the wait with ErrStalled. Bytes Write
// reports as written are delivered unless the flow is lost.
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.lockWrite(&c.send.dl); err != nil {
		return 0, c.opError("write", err)
	}
	defer c.unlockWrite()
	total := 0
	// The carrier this call has waited on, and its connection's count of
	// packets received when the wait began (see checkStall).
	var watched *carrier
	var watchedPackets uint64
	for {
		c.mu.Lock()
		if err := c.writableLocked(); err != nil {
			c.mu.Unlock()
			return total, c.opError("write", err)
		}
		callStart := c.send.buf.end
		var budgetWait <-chan struct{}
		var unused *share
		var unusedBytes int
		if n := min(len(b), c.h.cfg.flowBuffer()-c.send.buf.buffered()); n > 0 {
			if need := c.send.buf.need(n); need > 0 {
				got, wait := c.h.budget.take(c.share, need)
				c.charged += got
				c.send.buf.grow(n, got)
				// What the grant held beyond whole chunks goes back at once.
				unused, unusedBytes = c.freedLocked()
				if n = min(n, c.send.buf.room()); n == 0 {
					budgetWait = wait
					c.h.limits.bufferWaits.Add(1)
				}
			}
			if c.send.buf.buffered() == 0 {
				c.send.ackedAt = time.Now() // the stall clock starts with the first byte owed
			}
			c.send.buf.append(b[:n])
			b, total = b[n:], total+n
			c.stats.BytesWritten += uint64(n)
			c.acct.sent.Add(uint64(n))
		}
		var car *carrier
		if c.state == flowActive {
			car = c.car
		}
		changed := c.changedLocked()
		stallAt := c.send.ackedAt.Add(c.h.cfg.stallTimeout())
		c.mu.Unlock()
		c.h.budget.give(unused, unusedBytes)

		if car != nil {
			err := c.flush(car)
			switch {
			case err == nil || err == errSuperseded:
			case isDeadline(err) && c.current(car):
				// Take back what never reached the stream, so that what
				// Write reports is exactly what will be delivered.
				c.mu.Lock()
				dropped := c.send.buf.truncate(max(car.sent, callStart))
				c.stats.BytesWritten -= uint64(dropped)
				c.acct.sent.Add(-uint64(dropped))
				sh, freed := c.freedLocked()
				c.mu.Unlock()
				c.h.budget.give(sh, freed)
				total -= dropped
				if c.isClosed() {
					err = net.ErrClosed
				}
				return total, c.opError("write", err)
			case c.carrierError(car, err, true):
			default:
				return total, c.opError("write", c.writeErr(err))
			}
		}
		if len(b) == 0 {
			return total, nil
		}
		// Waiting for room: the peer owes acknowledgements. If it takes
		// the data but never acknowledges it, the wait ends in a reset.
		var stall <-chan time.Time
		var stallTimer *time.Timer
		if car != nil && c.h.cfg.stallTimeout() > 0 {
			if watched != car {
				watched, watchedPackets = car, car.sess.qc.ConnectionStats().PacketsReceived
			}
			// At least a little after the watch began, so that the peer
			// has had the time to be heard.
			stallTimer = time.NewTimer(max(time.Until(stallAt), 250*time.Millisecond))
			stall = stallTimer.C
		}
		select {
		case <-changed:
		case <-budgetWait:
		case <-stall:
			c.checkStall(car, watchedPackets)
		case <-c.send.dl.wait():
			stopTimer(stallTimer)
			return total, c.opError("write", os.ErrDeadlineExceeded)
		}
		stopTimer(stallTimer)
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// checkStall resets the flow if its peer is at fault for the Write
// waiting: for StallTimeout it acknowledged nothing, though everything
// sent has left for it (its QUIC flow control let it through, so it is
// not merely reading slowly) and it was heard meanwhile (packetsBefore is
// the connection's count of packets received when the Write began to
// wait: the path works). A peer that holds a flow's memory this way is hostile or
// broken, and the flow would otherwise hold it until ResumeTimeout.
// The caller holds the write lock, which guards car.sent.
func (c *Conn) checkStall(car *carrier, packetsBefore uint64) {
	c.mu.Lock()
	stalled := c.car == car && c.state == flowActive && c.send.buf.buffered() > 0 &&
		car.sent == c.send.buf.end && time.Since(c.send.ackedAt) >= c.h.cfg.stallTimeout()
	c.mu.Unlock()
	if !stalled || car.sess.qc.Context().Err() != nil || car.sess.qc.ConnectionStats().PacketsReceived == packetsBefore {
		return
	}
	c.h.limits.flowsStalled.Add(1)
	car.s.CancelWrite(streamStalled)
	car.s.CancelRead(streamStalled)
	c.lose(fmt.Errorf("%w: nothing acknowledged for %v", ErrStalled, c.h.cfg.stallTimeout()))
}

func (c *Conn) writableLocked() error {
	switch {
	case c.closed:
		return net.ErrClosed
	case c.send.state == sendStopped:
		return c.send.err
	case c.state == flowLost:
		return c.lostErr
	case c.send.state != sendOpen:
		return net.ErrClosed // after CloseWrite
	}
	return nil
}

// lockWrite takes the write lock, giving up when dl (if any) passes or the flow
// ends.
func (c *Conn) lockWrite(dl *deadline) error {
	select {
	case c.send.lock <- struct{}{}:
		return nil
	default:
	}
	var expire <-chan struct{}
	if dl != nil {
		expire = dl.wait() // only now: an uncontended Write needs no channel
	}
	select {
	case c.send.lock <- struct{}{}:
		return nil
	case <-expire:
		return os.ErrDeadlineExceeded
	case <-c.finished:
		return c.endErr()
	}
}

func (c *Conn) unlockWrite() { <-c.send.lock }

// errSuperseded: the carrier a flush wrote to was replaced meanwhile.
var errSuperseded = errors.New("sal: carrier superseded")

// flush hands the buffered bytes from car.sent on to car's stream, then the
// FIN if one is wanted. The caller holds the write lock.
func (c *Conn) flush(car *carrier) error {
	for {
		c.mu.Lock()
		if c.car != car || c.state != flowActive {
			c.mu.Unlock()
			return errSuperseded
		}
		p := c.send.buf.slice(car.sent)
		if car.sent < c.send.buf.acked {
			// A resume promised the listener the bytes from car.sent on,
			// and it will discard those it already has; an Ack for them
			// arrived meanwhile and freed them here. Any bytes will do.
			p = zeros[:min(uint64(len(zeros)), c.send.buf.acked-car.sent)]
		}
		sendFin := p == nil && c.send.finQueued() && !car.finSent
		if sendFin {
			car.finSent = true
		}
		if p != nil {
			c.send.buf.hold(car.sent)
		}
		c.mu.Unlock()
		if p == nil {
			if !sendFin {
				return nil
			}
			if err := car.s.Close(); err != nil {
				// quic-go reports a stream the peer stopped with a plain
				// error here; the stream's context holds the StreamError.
				if cause := context.Cause(car.s.Context()); cause != nil {
					return cause
				}
				return err
			}
			return nil
		}
		car.sess.wrote.Add(1)
		n, err := car.s.Write(p)
		c.mu.Lock()
		c.send.buf.unhold()
		sh, freed := c.freedLocked()
		c.mu.Unlock()
		c.h.budget.give(sh, freed)
		car.sent += uint64(n)
		if err != nil {
			return err
		}
	}
}

// zeros fills the part of a replay the peer already acknowledged.
var zeros [4096]byte

// kick flushes in the background what no Write will: a replay after a
// resume, or the FIN after CloseWrite or Close.
func (c *Conn) kick() {
	c.mu.Lock()
	if c.state != flowActive {
		c.mu.Unlock()
		return
	}
	if c.send.flush != flushIdle {
		c.send.flush = flushAgain // the running flush may have looked already
		c.mu.Unlock()
		return
	}
	c.send.flush = flushRunning
	c.mu.Unlock()
	if !c.h.spawn(c.backgroundFlush) { // a closing Host ends the flow itself
		c.mu.Lock()
		c.send.flush = flushIdle
		c.mu.Unlock()
	}
}

func (c *Conn) backgroundFlush() {
	for {
		if c.lockWrite(nil) != nil { // no deadline: the flush runs until the flow ends
			c.mu.Lock()
			c.send.flush = flushIdle
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		c.send.flush = flushRunning
		car := c.car
		pending := c.state == flowActive && (car.sent < c.send.buf.end || c.send.finQueued() && !car.finSent)
		if pending {
			// Bytes Write accepted must go out whatever the user's write
			// deadline; it applies again afterwards.
			c.send.flusherOwnsDeadline = true
			car.s.SetWriteDeadline(time.Time{})
		}
		c.mu.Unlock()
		var err error
		if pending {
			err = c.flush(car)
			c.mu.Lock()
			c.send.flusherOwnsDeadline = false
			if c.car == car {
				if c.closed {
					car.s.SetWriteDeadline(aLongTimeAgo)
				} else {
					car.s.SetWriteDeadline(c.send.deadline)
				}
			}
			c.mu.Unlock()
		}
		c.unlockWrite()
		if err != nil && err != errSuperseded && !isDeadline(err) {
			c.carrierError(car, err, true)
		}
		c.mu.Lock()
		if c.send.flush == flushAgain && c.state == flowActive {
			c.mu.Unlock()
			continue
		}
		c.send.flush = flushIdle
		c.mu.Unlock()
		return
	}
}
