package sal

// A flow's state lives in its Conn, guarded by Conn.mu. The state machine
// (flowState), its transitions and the lock order are in flow.go; the
// states of its two directions are in halves.go.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
)

// Conn is one flow: a reliable, ordered byte stream to a service. It
// implements net.Conn; Read and Write may be called concurrently with each
// other and with every other method.
//
// A flow outlives the QUIC stream and connection that carry it. Each end
// keeps the bytes the other has not acknowledged reading; when the carrier
// fails, or its Host moves, the dialing end resumes the flow on a new
// stream, possibly to a new address of the service, and both ends replay
// what the other missed. Reads and Writes only pause meanwhile. A flow that
// cannot be resumed within Config.ResumeTimeout fails with ErrFlowLost.
//
// Deadline errors are net.Errors with Timeout() == true that wrap
// os.ErrDeadlineExceeded. After Close, Read and Write return errors that
// wrap net.ErrClosed. Close sends everything written so far and then ends
// the flow, so the peer reads io.EOF.
type Conn struct {
	h        *Host
	service  ServiceID
	flowID   uint64
	secret   [secretLen]byte // resume secret; zero when the peer sent none
	peerKey  resolve.Fingerprint
	localEnd netip.AddrPort // this Host's address when the flow opened
	dialer   bool
	authed   bool

	finished chan struct{} // closed when the flow is over and its state released
	resumeMu sync.Mutex    // listener: serializes resumes of the flow

	send sendHalf // the outgoing direction (halves.go)
	recv recvHalf // the incoming direction

	// Guarded by mu. (The fields are ordered for size: a server holds
	// thousands of Conns.)
	mu        sync.Mutex
	ctx       context.Context // done at Close or loss; nil until Context is called
	cancel    context.CancelCauseFunc
	changed   chan struct{} // see changedLocked; nil while nobody waits
	lostErr   error
	car       *carrier           // the stream carrying the flow; nil while suspended
	remoteEnd netip.AddrPort     // the peer's, as last seen (RemoteAddr asks the carrier)
	share     *share             // the budget share of the connection carrying the flow (see budget)
	charged   int                // memory taken from share for send.buf: its capacity, once settled
	gen       uint64             // dialer: next resume generation; listener: lowest it accepts
	moveTo    []resolve.Endpoint // dialer: where a watch said the service went; tried first
	suspended time.Time          // when the flow last lost its carrier
	resumeBy  time.Time          // while suspended: lost unless resumed by then
	stats     FlowStats
	state     flowState
	closed    bool // Close was called: the user's handle is done, whatever the directions' states
	resuming  bool // dialer: a resume loop runs
	counted   bool // in acct's open flows (see countOpen)

	acct *serviceCounters // the service's counters in the Host; set before the flow is shared
	// queuedOn is the connection whose slot in its Listener's accept queue
	// the flow takes until accepted (see Listener.reserve); set before it
	// is queued.
	queuedOn *session
}

// carrier is one stream carrying a flow, or, striped, one stream on each
// path (stripe.go).
type carrier struct {
	s       dataStream
	head    *quic.Stream // the stream the SAL headers began: s itself, or the striped carrier's anchor
	striped *striped     // nil for a plain stream
	// id names a striped carrier in a Stripe: 0 for an Open's, gen+1 for
	// the Resume's of generation gen.
	id      uint64
	base    uint64 // the flow offset of the carrier's first byte out
	sess    *session
	peer    *peer  // dialer: the reference on the connection, given back when the carrier is dropped
	sent    uint64 // flow offset handed to s; guarded by the Conn's send.lock
	finSent bool   // the FIN was handed to s; guarded by the Conn's mu
	skip    uint64 // bytes the peer resent that Read must discard; guarded by the Conn's recv.mu
	replay  uint64 // bytes to send again when installed (fixed at install)
	ready   chan struct{}
	err     error // why ready was closed without the stream becoming usable
}

// FlowStats describes a flow. RTT figures are those of the QUIC connection
// that currently carries the flow.
type FlowStats struct {
	BytesRead     uint64        // delivered to Read
	BytesWritten  uint64        // accepted by Write
	BytesReplayed uint64        // sent again on a new stream after a resume
	Resumes       int           // times the flow moved to a new stream
	Stalled       time.Duration // total time without a carrier
	LastStall     time.Duration
	SmoothedRTT   time.Duration
	MinRTT        time.Duration
	// BytesRedundant counts what the peer sent again after a resume that
	// Read had already delivered, and so discarded: the price of a resume
	// that sends before it hears how far this end read.
	BytesRedundant uint64
}

func (h *Host) newConn(dialer bool, service ServiceID, flowID uint64, peerKey resolve.Fingerprint, authed bool, localEnd, remoteEnd netip.AddrPort) *Conn {
	c := &Conn{
		h:         h,
		dialer:    dialer,
		service:   service,
		flowID:    flowID,
		peerKey:   peerKey,
		authed:    authed,
		localEnd:  localEnd,
		remoteEnd: remoteEnd,
		finished:  make(chan struct{}),
		send:      sendHalf{lock: make(chan struct{}, 1)},
		state:     flowSuspended, // until install
		acct:      h.counters(service),
	}
	return c
}

// Read reads data from the flow. At the end of the peer's data it returns
// io.EOF. It waits, within its deadline, while the flow resumes.
func (c *Conn) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		car, changed, err := c.readableLocked()
		c.mu.Unlock()
		if err != nil {
			if err == io.EOF {
				return 0, err
			}
			return 0, c.opError("read", err)
		}
		if len(b) == 0 {
			return 0, nil
		}
		if car == nil || !car.isReady() {
			// No carrier, or one whose Reply is not in yet: wait, without
			// holding recv.mu, so that a resume can take it.
			var ready <-chan struct{}
			if car != nil {
				ready = car.ready
			}
			select {
			case <-changed:
			case <-ready:
			case <-c.recv.dl.wait():
				return 0, c.opError("read", os.ErrDeadlineExceeded)
			}
			continue
		}
		n, err, retry := c.readFrom(car, b)
		if retry {
			continue
		}
		return n, err
	}
}

// readFrom reads from car under recv.mu, so that a resume that needs the read
// offset waits until the bytes read are accounted for. retry says the
// carrier failed and Read should wait for the next one.
func (c *Conn) readFrom(car *carrier, b []byte) (n int, err error, retry bool) {
	c.recv.mu.Lock()
	defer c.recv.mu.Unlock()
	if !c.current(car) {
		return 0, nil, true // a resume replaced it while we waited for recv.mu
	}
	if car.skip > 0 {
		if err := c.discard(car); err != nil {
			if isDeadline(err) {
				return 0, c.opError("read", err), false
			}
			if c.carrierError(car, err, false) {
				return 0, nil, true
			}
			return 0, c.opError("read", c.readErr(err)), false
		}
	}
	n, err = car.s.Read(b)
	if n > 0 {
		c.delivered(n)
	}
	switch {
	case err == nil:
		return n, nil, false
	case err == io.EOF:
		c.deliveredFin()
		if n > 0 {
			return n, nil, false
		}
		return 0, io.EOF, false
	case isDeadline(err):
		return n, c.opError("read", err), false
	case c.carrierError(car, err, false):
		return n, nil, n == 0
	}
	if n > 0 {
		return n, nil, false
	}
	return 0, c.opError("read", c.readErr(err)), false
}

// readableLocked says what Read should do: read from car, wait on changed
// (car nil or not ready), or fail with err.
func (c *Conn) readableLocked() (car *carrier, changed <-chan struct{}, err error) {
	switch {
	case c.closed:
		return nil, nil, net.ErrClosed
	case c.recv.state == recvFinRead:
		return nil, nil, io.EOF
	case c.recv.state == recvReset:
		return nil, nil, c.recv.err
	case c.state == flowLost:
		return nil, nil, c.lostErr
	case c.recv.state == recvStopped:
		return nil, nil, net.ErrClosed
	}
	if c.state == flowActive {
		car = c.car
	}
	return car, c.changedLocked(), nil
}

// discard drops the bytes the peer resent after a resume, which Read
// already delivered from an earlier carrier.
func (c *Conn) discard(car *carrier) error {
	var scratch [4096]byte
	var dropped uint64
	defer func() {
		c.mu.Lock()
		c.stats.BytesRedundant += dropped
		c.mu.Unlock()
	}()
	for car.skip > 0 {
		n, err := car.s.Read(scratch[:min(uint64(len(scratch)), car.skip)])
		car.skip -= uint64(n)
		dropped += uint64(n)
		if err != nil {
			if err == io.EOF && car.skip > 0 {
				return io.ErrUnexpectedEOF
			}
			if err != io.EOF {
				return err
			}
		}
	}
	return nil
}

// Close ends the flow: data already written is still delivered, then the
// peer reads io.EOF; data the peer sends from now on is discarded and its
// writes fail. Blocked Reads and Writes return at once.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("close", net.ErrClosed)
	}
	c.closed = true
	c.recv.stop()
	if c.state != flowLost {
		c.send.queueFin()
	}
	car := c.car
	c.broadcastLocked()
	sess, off, ack := c.ackLocked() // readerGone; see ackLocked
	c.mu.Unlock()
	if testHookClosing != nil {
		testHookClosing(c)
	}

	c.endContext()
	if car != nil {
		car.s.CancelRead(streamClosed)
		c.mu.Lock()
		if !c.send.flusherOwnsDeadline {
			car.s.SetWriteDeadline(aLongTimeAgo) // unblock a Write; the background flush clears it
		}
		c.mu.Unlock()
	}
	if ack {
		sess.ack(c.flowID, off)
	}
	c.kick()
	c.maybeFinish()
	return nil
}

// testHookClosing, when set by a test, runs in Close just after the flow
// is marked closed, before the peer is told.
var testHookClosing func(*Conn)

// CloseWrite half-closes the flow: the peer reads io.EOF after the data
// written so far, while this end can still read.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	if c.state == flowLost || !c.send.queueFin() {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	c.kick()
	return nil
}

// CloseRead tells the peer this end will read no more: its writes fail.
func (c *Conn) CloseRead() error {
	c.mu.Lock()
	c.recv.stop()
	car := c.car
	c.broadcastLocked()
	sess, off, ack := c.ackLocked() // readerGone; see ackLocked
	c.mu.Unlock()
	if car != nil {
		car.s.CancelRead(streamClosed)
	}
	if ack {
		sess.ack(c.flowID, off)
	}
	c.maybeFinish()
	return nil
}

// LocalAddr returns this end's address: the service on the listening side,
// the Host's key-only ID on the dialing side.
func (c *Conn) LocalAddr() net.Addr {
	if c.dialer {
		return Addr{Service: c.h.selfID, Endpoint: c.localEnd}
	}
	return Addr{Service: c.service, Endpoint: c.localEnd}
}

// RemoteAddr returns the peer's address: the service on the dialing side,
// the dialing Host's key-only ID on the listening side. Its Endpoint is
// where the flow is carried now; it changes when the flow resumes.
func (c *Conn) RemoteAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := Addr{Service: c.service, Endpoint: c.remoteEnd}
	if !c.dialer {
		a.Service = ServiceID{key: c.peerKey} // the dialer's key-only ID
	}
	if c.car != nil {
		// The connection's view: it follows a peer's migration.
		a.Endpoint = c.car.remoteAddr()
	}
	return a
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for Read calls, pending ones included.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("set deadline", net.ErrClosed)
	}
	c.recv.deadline = t
	c.recv.dl.set(t)
	if c.car != nil && (c.car.ready == nil || isClosedChan(c.car.ready)) {
		c.car.s.SetReadDeadline(t)
	}
	c.mu.Unlock()
	return nil
}

// SetWriteDeadline sets the deadline for Write calls, pending ones included.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("set deadline", net.ErrClosed)
	}
	c.send.deadline = t
	c.send.dl.set(t)
	if c.car != nil && !c.send.flusherOwnsDeadline {
		c.car.s.SetWriteDeadline(t)
	}
	c.mu.Unlock()
	return nil
}

// Service returns the service the flow was opened to.
func (c *Conn) Service() ServiceID { return c.service }

// FlowID returns the flow's ID, chosen by the dialer.
func (c *Conn) FlowID() uint64 { return c.flowID }

// PeerKey returns the fingerprint of the key the peer proved it holds in
// the TLS handshake.
func (c *Conn) PeerKey() resolve.Fingerprint { return c.peerKey }

// Authenticated reports whether the peer's identity is verified. On the
// dialing side it is true when the service ID or the resolver pinned a key
// and the peer proved it holds that key; when nothing pinned a key the flow
// is encrypted but the peer could be anyone the resolver pointed at. On the
// listening side it is always true: the peer is named by its key
// (RemoteAddr), which it proved it holds. A resumed flow keeps talking to
// the same key.
func (c *Conn) Authenticated() bool { return c.authed }

// Context returns a context that is done when the flow is closed or lost.
func (c *Conn) Context() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		// Made on first use: most flows never ask, and a context costs
		// several hundred bytes a flow.
		c.ctx, c.cancel = context.WithCancelCause(c.h.ctx)
		if c.closed || c.state == flowLost || c.state == flowDone {
			c.cancel(c.endErrLocked())
		}
	}
	return c.ctx
}

// endContext ends the flow's context, if it has one, with why the flow
// can do no more I/O.
func (c *Conn) endContext() {
	c.mu.Lock()
	cancel, err := c.cancel, c.endErrLocked()
	c.mu.Unlock()
	if cancel != nil {
		cancel(err)
	}
}

// Stats returns the flow's statistics.
func (c *Conn) Stats() FlowStats {
	c.mu.Lock()
	s := c.stats
	car := c.car
	if c.state == flowSuspended {
		s.Stalled += time.Since(c.suspended)
	}
	c.mu.Unlock()
	if car != nil {
		cs := car.sess.qc.ConnectionStats()
		s.SmoothedRTT, s.MinRTT = cs.SmoothedRTT, cs.MinRTT
	}
	return s
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// current reports whether car still carries the flow.
func (c *Conn) current(car *carrier) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.car == car && c.state == flowActive
}

// broadcastLocked wakes whoever waits for a change (changedLocked).
func (c *Conn) broadcastLocked() {
	if c.changed != nil {
		close(c.changed)
		c.changed = nil // the next waiter makes a fresh one
	}
}

// changedLocked returns a channel that is closed at the next change that
// may unblock Read or Write. It is made only when someone waits.
func (c *Conn) changedLocked() <-chan struct{} {
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	return c.changed
}

func (c *Conn) opError(op string, err error) error {
	if c.isClosed() && !errors.Is(err, ErrFlowLost) {
		err = net.ErrClosed
	}
	return &OpError{Op: op, Service: c.service.String(), Endpoint: c.RemoteAddr().(Addr).Endpoint, Err: err}
}

func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// aLongTimeAgo is a deadline in the past, used to unblock pending I/O.
var aLongTimeAgo = time.Unix(1, 0)

var _ net.Conn = (*Conn)(nil)

// key names the flow in its Host.
func (c *Conn) key() flowKey {
	if c.dialer {
		return flowKey{id: c.flowID}
	}
	return flowKey{listener: true, peer: c.peerKey, id: c.flowID}
}

// remoteAddr is the peer's address as the carrier's connection sees it.
// A connection this Host dialed has the peer's address fixed (p.addr):
// asking quic-go races with its own path switch when the connection
// migrates (quic-go's Conn.RemoteAddr reads the path unsynchronized).
func (car *carrier) remoteAddr() netip.AddrPort {
	if car.peer != nil {
		return car.peer.addr
	}
	return netipAddrPortOf(car.sess.qc.RemoteAddr())
}

// isReady reports whether the carrier's stream now carries only data.
func (car *carrier) isReady() bool {
	return car.ready == nil || isClosedChan(car.ready) && car.err == nil
}
