package sal

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal/internal/wire"
)

// errResumeRefused: the listener does not know the flow (any more), so no
// further attempt can succeed.
var errResumeRefused = errors.New("resume refused by peer")

// resumeLoop moves a suspended dialer flow onto a new stream: it finds the
// service's current endpoints, connects, and sends a Resume, retrying with
// backoff (or as soon as a watch reports new endpoints) until it succeeds,
// the listener refuses, or Config.ResumeTimeout passes.
func (c *Conn) resumeLoop(cause error) {
	defer func() {
		c.mu.Lock()
		again := c.state == flowSuspended && !c.h.isClosed() // lock order: a Conn's mu, then h.mu
		if !again {
			c.resuming = false
		}
		c.mu.Unlock()
		if again { // the new carrier failed as we returned; suspend saw us still running
			c.h.wg.Go(func() { c.resumeLoop(cause) })
		}
	}()
	c.mu.Lock()
	by := c.resumeBy
	c.mu.Unlock()
	ctx, cancel := context.WithDeadlineCause(c.h.ctx, by, c.h.resumeExpired())
	defer cancel()
	c.h.wg.Go(func() { // a flow that ends meanwhile stops the loop (counted: resumeLoop is, so the Add is safe)
		select {
		case <-c.finished:
			cancel()
		case <-ctx.Done():
		}
	})

	// A watch that reports new endpoints cuts an attempt or a backoff
	// short: the service moved, and waiting on its old address is
	// pointless.
	moved, stopWatching := c.h.watchMoves(c.service) // the service's one watch
	defer stopWatching()
	backoff := 20 * time.Millisecond
	var last error // what the last attempt that ran its course met
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		state := c.state
		c.mu.Unlock()
		if state != flowSuspended {
			return
		}
		actx, acancel := context.WithCancel(ctx)
		movedNow := make(chan struct{})
		c.h.wg.Go(func() {
			select {
			case <-moved:
				close(movedNow)
				acancel()
			case <-actx.Done():
			}
		})
		err := c.tryResume(actx, attempt)
		acancel()
		if err == nil {
			return
		}
		if isClosedChan(movedNow) {
			backoff = 20 * time.Millisecond
			continue
		}
		c.h.log.Debug("resume attempt failed", "service", c.service, "flow", c.flowID, "attempt", attempt, "err", err)
		if errors.Is(err, errResumeRefused) {
			c.lose(err)
			return
		}
		if !errors.Is(err, context.Cause(ctx)) { // not merely cut short by the expiry
			last = err
		}
		if ctx.Err() != nil {
			if c.h.isClosed() {
				c.lose(errors.Join(cause, context.Cause(ctx)))
			} else if !isClosedChan(c.finished) {
				c.lose(resumeLost(context.Cause(ctx), cause, last))
			}
			return
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, time.Second)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-moved:
			timer.Stop()
			backoff = 20 * time.Millisecond
		case <-ctx.Done():
			timer.Stop()
		}
	}
}

// resumeLost is why a flow whose ResumeTimeout passed is lost: the
// expiry, the failure that suspended the flow, and what the last attempt
// that was not cut short by the expiry met, each said once.
func resumeLost(expired, first, last error) error {
	switch {
	case first == nil && last == nil:
		return expired
	case first == nil:
		return fmt.Errorf("%w (last attempt: %w)", expired, last)
	case last == nil || last.Error() == first.Error():
		return fmt.Errorf("%w (first failure: %w)", expired, first)
	}
	return fmt.Errorf("%w (first failure: %w; last attempt: %w)", expired, first, last)
}

// resumeExpired is why a flow is lost once its ResumeTimeout has passed.
func (h *Host) resumeExpired() error {
	return fmt.Errorf("no resume within %v of the last packet heard from the peer", h.cfg.resumeTimeout())
}

// tryResume makes one attempt over the service's endpoints, the one the
// flow used last first.
func (c *Conn) tryResume(ctx context.Context, attempt int) error {
	if attempt > 0 {
		// A cache without a watch may be holding the address that failed.
		if inv, ok := findAbility[resolve.Invalidator](c.h.resolver); ok {
			inv.Invalidate(c.service.LookupName())
		}
	}
	c.mu.Lock()
	eps := c.moveTo
	c.moveTo = nil
	last := c.remoteEnd
	c.mu.Unlock()
	var lookupErr error
	if eps == nil {
		if eps, lookupErr = c.h.lookup(ctx, c.service); lookupErr != nil {
			// Not found, or every endpoint down (resolve.ErrAllDown): a
			// health checker may have lost sight of our peer for a moment
			// (a handover) while it still holds the flow, so it is tried
			// below, as when only other Hosts are listed.
			if !errors.Is(lookupErr, resolve.ErrNotFound) || ctx.Err() != nil {
				return lookupErr
			}
			eps = nil
		}
	}
	eps = slices.Clone(eps) // lookup's slice may be shared
	holder := false         // a listed endpoint may hold the flow's other end
	for i, ep := range eps {
		if dialable(ep.Addr) == last && i > 0 {
			eps[0], eps[i] = eps[i], eps[0]
		}
		holder = holder || ep.Key == c.peerKey || ep.Key.IsZero()
	}
	if rule, _ := c.h.table.Lookup(c.service); !holder && rule.Action == ActionResolve && last.IsValid() {
		// Only other Hosts are listed: the resolver may have left our peer
		// out because a health checker could not reach it, while it still
		// holds the flow. Try it last. (A table rule is never overridden.)
		eps = append(eps, resolve.Endpoint{Addr: last, Key: c.peerKey})
	}
	if len(eps) == 0 {
		return lookupErr
	}
	var errs []error
	if lookupErr != nil {
		errs = append(errs, lookupErr)
	}
	for _, ep := range eps {
		// Every attempt is bounded, the last one too: the loop tries again.
		err := c.resumeAt(ctx, dialable(ep.Addr), false)
		if err == nil {
			return nil
		}
		if errors.Is(err, errResumeRefused) {
			return err
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// resumeAt sends a Resume to addr. The flow's data follows the Resume at
// once; reads wait for the Reply.
func (c *Conn) resumeAt(ctx context.Context, addr netip.AddrPort, last bool) error {
	if !last {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.h.cfg.endpointTimeout())
		defer cancel()
	}
	p, _, err := c.h.getPeer(ctx, addr, c.service)
	if err != nil {
		return err
	}
	if p.key != c.peerKey {
		// Only the Host that holds the flow's other end can resume it.
		c.h.releasePeer(p)
		return fmt.Errorf("%w: %s holds %s, the flow's peer is %s", ErrKeyMismatch, addr, p.key, c.peerKey)
	}
	s, err := p.sess.qc.OpenStreamSync(ctx)
	if err != nil {
		c.h.releasePeer(p)
		return err
	}

	// A Read still inside the old stream must account for what it took
	// before the offset goes out.
	c.recv.mu.Lock()
	c.mu.Lock()
	c.recv.mu.Unlock()
	gen := c.gen
	c.gen++
	req := wire.Resume{
		FlowID:   c.flowID,
		Gen:      gen,
		Tag:      resumeTag(c.secret, c.flowID, gen),
		ReadOff:  c.recv.off,
		SendFrom: c.send.buf.acked,
	}
	if c.recv.state == recvFinRead {
		req.ReadOff++ // the FIN counts as a byte
	}
	c.recv.ackSent = req.ReadOff
	c.mu.Unlock()
	striping := c.h.cfg.PathPolicy == PathAggregate
	if striping {
		req.Ext = c.h.stripesExt()
	}
	hdr, _ := wire.AppendResume(nil, req)
	if _, err := s.Write(hdr); err != nil {
		s.CancelRead(streamProtocol)
		c.h.releasePeer(p)
		return err
	}
	car, ok := c.h.newCarrier(s, p.sess, req.SendFrom, gen+1, striping, minStripeWindow, false)
	if !ok {
		s.CancelRead(streamLost)
		s.CancelWrite(streamLost)
		c.h.releasePeer(p)
		return net.ErrClosed
	}
	car.peer, car.ready = p, make(chan struct{})
	if !c.install(car) {
		return nil // the flow ended meanwhile
	}

	// Read the Reply, bounded by ctx: a deadline directly, a cancellation
	// through a past deadline.
	var dmu sync.Mutex
	replied := false
	stop := context.AfterFunc(ctx, func() {
		dmu.Lock()
		defer dmu.Unlock()
		if !replied {
			s.SetReadDeadline(aLongTimeAgo)
		}
	})
	if dl, ok := ctx.Deadline(); ok {
		s.SetReadDeadline(dl)
	}
	reply, err := wire.ReadReply(s)
	dmu.Lock()
	replied = true
	dmu.Unlock()
	stop()
	switch {
	case err == nil && reply.Status == wire.StatusNoFlow:
		err = errResumeRefused
	case err == nil && reply.Status != wire.StatusOK:
		err = fmt.Errorf("resume: %w", replyError(reply))
	case err != nil && errors.Is(err, wire.ErrMalformed):
		err = fmt.Errorf("%w: %w", ErrProtocol, err)
	case striping:
		var w uint64
		if w, err = agreedStripes(reply); err == nil {
			car.striped.setPeerWindow(w)
		}
	}
	if err != nil {
		car.err = err
		c.suspend(car, err)
		close(car.ready)
		return err
	}
	if v, ok := wire.LookupTLV(reply.Ext, wire.ExtReadOff); ok {
		if off, ok := wire.ParseUint64TLV(v); ok {
			c.acked(off)
		}
	}
	c.mu.Lock()
	c.resumedLocked(car)
	c.mu.Unlock()
	// The event first: whoever watches events learns of the resume before
	// the data it lets through (a test that counts resumes once its echo
	// is back counted none, now and then).
	c.resumed(car)
	c.replyIn(car)
	return nil
}

// resumed reports a completed resume.
func (c *Conn) resumed(car *carrier) {
	c.mu.Lock()
	stall := c.stats.LastStall
	replayed := car.replay
	c.mu.Unlock()
	c.h.emit(Event{Kind: EventResumed, Service: c.service, FlowID: c.flowID, Stall: stall,
		Replayed: replayed, To: car.remoteAddr()})
	c.h.log.Debug("flow resumed", "service", c.service, "flow", c.flowID, "stall", stall)
}

// errResumedElsewhere is why a listener's flow leaves a carrier that
// still looked alive: its dialer resumed it on another stream.
var errResumedElsewhere = errors.New("sal: the dialer resumed the flow on another stream")

// serveResume handles a Resume on the listening side: it checks that the
// dialer knows the flow's secret, that the generation is new, and that the
// offsets fit what this end holds, and only then moves the flow onto s.
// Anything wrong leaves the flow as it was. Resumes of one flow are
// handled one at a time, in the order they arrive.
func (h *Host) serveResume(sess *session, s *quic.Stream, rs *wire.Resume) {
	peerKey := sess.peerKey
	refuse := func(why string) {
		h.log.Debug("resume refused", "flow", rs.FlowID, "why", why)
		h.answerAndEnd(s, wire.StatusNoFlow, streamRejected)
	}
	peerWin, stripes, err := peerStripes(rs.Ext)
	if err != nil {
		refuse("bad stripes window")
		return
	}
	c := h.flow(flowKey{listener: true, peer: peerKey, id: rs.FlowID})
	if c == nil {
		refuse("unknown flow")
		return
	}
	c.resumeMu.Lock()
	defer c.resumeMu.Unlock()
	want := resumeTag(c.secret, c.flowID, rs.Gen)
	c.mu.Lock()
	switch {
	case c.secret == [secretLen]byte{} || !hmac.Equal(want[:], rs.Tag[:]):
		c.mu.Unlock()
		refuse("bad tag")
		return
	case rs.Gen < c.gen:
		c.mu.Unlock()
		refuse("replayed generation")
		return
	case c.state == flowLost || c.state == flowDone:
		c.mu.Unlock()
		refuse("flow over")
		return
	case rs.ReadOff < c.send.buf.acked || rs.ReadOff > c.send.buf.end+1 || rs.ReadOff == c.send.buf.end+1 && !c.send.finQueued():
		c.mu.Unlock()
		refuse("read offset out of range")
		return
	case rs.SendFrom > c.recv.off:
		c.mu.Unlock()
		refuse("send offset beyond what was read")
		return
	}
	// Valid: from here on the flow moves. Take the old carrier away first,
	// and let a Read still inside it account for what it took, so that the
	// offset below is final: no byte can come from the old stream after it.
	c.gen = rs.Gen + 1
	old := c.car
	if old != nil {
		now := time.Now()
		c.detachLocked(old, now, now.Add(h.cfg.resumeTimeout())) // the peer speaks now
	}
	c.mu.Unlock()
	if old != nil {
		c.dropDetached(old, errResumedElsewhere)
	}
	c.recv.mu.Lock()
	c.mu.Lock()
	c.recv.mu.Unlock()
	dataRead := c.recv.off
	readOff := dataRead // as acknowledged: the FIN counts as a byte
	if c.recv.state == recvFinRead {
		readOff++
	}
	c.mu.Unlock()

	// The Reply goes out before the carrier is installed, so that it
	// precedes every replayed byte on the stream.
	ext := mustTLV(wire.ExtReadOff, wire.Uint64TLV(readOff))
	if stripes {
		ext = append(ext, h.stripesExt()...)
	}
	b, _ := wire.AppendReply(nil, wire.Reply{Status: wire.StatusOK, Ext: ext})
	s.SetWriteDeadline(time.Now().Add(h.cfg.openTimeout()))
	if _, err := s.Write(b); err != nil {
		s.CancelRead(streamProtocol)
		s.CancelWrite(streamProtocol)
		if old != nil {
			c.awaitResume(err) // still suspended: the dialer will try again
		}
		return
	}
	s.SetWriteDeadline(time.Time{})
	c.acked(rs.ReadOff)
	sent := min(rs.ReadOff, c.bufEnd())
	car, ok := h.newCarrier(s, sess, sent, rs.Gen+1, stripes, peerWin, true)
	if !ok {
		s.CancelRead(streamLost)
		s.CancelWrite(streamLost)
		return
	}
	car.skip = dataRead - min(dataRead, rs.SendFrom)
	if c.install(car) {
		c.resumed(car)
	}
}

func (c *Conn) bufEnd() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.send.buf.end
}

func mustTLV(typ byte, v []byte) []byte {
	b, err := wire.AppendTLV(nil, typ, v)
	if err != nil {
		panic(err) // only called with fixed, short values
	}
	return b
}
