package sal

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
)

// Conn is one flow: a reliable, ordered byte stream to a service, carried
// by one QUIC stream. It implements net.Conn; Read and Write may be called
// concurrently with each other and with every other method.
//
// Deadline errors are net.Errors with Timeout() == true that wrap
// os.ErrDeadlineExceeded. After Close, Read and Write return errors that
// wrap net.ErrClosed. Close sends everything written so far and then ends
// the flow, so the peer reads io.EOF.
type Conn struct {
	s        *quic.Stream
	qconn    *quic.Conn
	local    Addr
	remote   Addr
	service  ServiceID
	flowID   uint64
	peerKey  resolve.Fingerprint
	authed   bool
	ctx      context.Context
	cancel   context.CancelCauseFunc
	release  func() // gives back the Host's reference on the connection
	released sync.Once

	// quic-go forbids closing a stream's send side concurrently with
	// Write. wmu serializes them, and Close first sets a past write
	// deadline so a blocked Write lets go of wmu promptly.
	wmu         sync.Mutex
	writeClosed bool // guarded by wmu

	// dmu orders deadline changes against Close, so that a deadline set
	// concurrently with Close cannot re-block a Write that Close unblocked.
	dmu    sync.Mutex
	closed atomic.Bool

	bytesRead, bytesWritten atomic.Uint64

	// An optimistic flow (the first on a connection dialed for its
	// service) returns from Dial before its Reply arrives; awaitReply
	// reads it in the background and closes replyDone, and Read waits for
	// that. nil replyDone means the Reply was read in Dial.
	replyDone chan struct{}
	replyErr  error     // set before replyDone is closed
	replyRead bool      // guarded by dmu: the stream now carries only data
	readDL    time.Time // guarded by dmu: applied to the stream once replyRead
	rdl       *deadline // the read deadline, for waiting on replyDone
}

// FlowStats describes a flow. RTT figures are those of the QUIC connection
// that carries the flow.
type FlowStats struct {
	BytesRead    uint64 // delivered to Read
	BytesWritten uint64 // accepted by Write
	SmoothedRTT  time.Duration
	MinRTT       time.Duration
}

// Stats returns the flow's statistics.
func (c *Conn) Stats() FlowStats {
	cs := c.qconn.ConnectionStats()
	return FlowStats{
		BytesRead:    c.bytesRead.Load(),
		BytesWritten: c.bytesWritten.Load(),
		SmoothedRTT:  cs.SmoothedRTT,
		MinRTT:       cs.MinRTT,
	}
}

func newConn(s *quic.Stream, qconn *quic.Conn, service ServiceID, flowID uint64, local, remote Addr, peerKey resolve.Fingerprint, authed bool, release func()) *Conn {
	c := &Conn{
		s:       s,
		qconn:   qconn,
		local:   local,
		remote:  remote,
		service: service,
		flowID:  flowID,
		peerKey: peerKey,
		authed:  authed,
		release: release,
	}
	c.ctx, c.cancel = context.WithCancelCause(qconn.Context())
	c.rdl = newDeadline()
	c.replyRead = true
	return c
}

// awaitReply reads an optimistic flow's Reply. It sets no deadline on the
// stream: the user's read deadline must not cut a Reply in half, so it is
// held back (readDL) until the Reply is in.
func (c *Conn) awaitReply() {
	err := readReply(c.s)
	if err != nil {
		c.replyErr = err
		c.s.CancelRead(streamRejected)
		c.s.CancelWrite(streamRejected)
	}
	c.dmu.Lock()
	c.replyRead = true
	c.s.SetReadDeadline(c.readDL)
	c.dmu.Unlock()
	close(c.replyDone)
}

// waitReply blocks Read until an optimistic flow's Reply is in.
func (c *Conn) waitReply() error {
	if c.replyDone == nil {
		return nil
	}
	select {
	case <-c.replyDone:
		return c.replyErr
	default:
	}
	select {
	case <-c.replyDone:
		return c.replyErr
	case <-c.rdl.wait():
		return os.ErrDeadlineExceeded
	case <-c.ctx.Done():
		return net.ErrClosed
	}
}

// Read reads data from the flow. At the end of the peer's data it returns
// io.EOF.
func (c *Conn) Read(b []byte) (int, error) {
	if c.closed.Load() {
		return 0, c.opError("read", net.ErrClosed)
	}
	if err := c.waitReply(); err != nil {
		return 0, c.opError("read", err)
	}
	n, err := c.s.Read(b)
	c.bytesRead.Add(uint64(n))
	if err != nil && err != io.EOF {
		err = c.opError("read", err)
	}
	return n, err
}

// Write writes data to the flow. It blocks until all of b is accepted by
// the flow's send buffer, a deadline passes, or the flow ends.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeClosed {
		return 0, c.opError("write", net.ErrClosed)
	}
	n, err := c.s.Write(b)
	c.bytesWritten.Add(uint64(n))
	if err != nil {
		err = c.opError("write", err)
	}
	return n, err
}

// Close ends the flow: data already written is still delivered, then the
// peer reads io.EOF; data the peer sends from now on is discarded and its
// writes fail. Blocked Reads and Writes return at once.
func (c *Conn) Close() error {
	c.dmu.Lock()
	if c.closed.Swap(true) {
		c.dmu.Unlock()
		return c.opError("close", net.ErrClosed)
	}
	c.s.SetWriteDeadline(aLongTimeAgo)
	c.dmu.Unlock()

	c.s.CancelRead(streamClosed)
	c.wmu.Lock()
	if !c.writeClosed {
		c.writeClosed = true
		c.s.Close()
	}
	c.wmu.Unlock()
	c.cancel(net.ErrClosed)
	c.released.Do(c.release)
	return nil
}

// CloseWrite half-closes the flow: the peer reads io.EOF after the data
// written so far, while this end can still read.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeClosed {
		return nil
	}
	c.writeClosed = true
	if err := c.s.Close(); err != nil {
		return c.opError("close", err)
	}
	return nil
}

// CloseRead tells the peer this end will read no more: its writes fail.
func (c *Conn) CloseRead() error {
	c.s.CancelRead(streamClosed)
	return nil
}

// LocalAddr returns this end's address: the service on the listening side,
// the Host's key-only ID on the dialing side.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address: the service on the dialing side,
// the dialing Host's key-only ID on the listening side.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for Read calls, pending ones included.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opError("set deadline", net.ErrClosed)
	}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.readDL = t
	c.rdl.set(t)
	if c.replyRead {
		return c.s.SetReadDeadline(t)
	}
	return nil
}

// SetWriteDeadline sets the deadline for Write calls, pending ones included.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.closed.Load() {
		return c.opError("set deadline", net.ErrClosed)
	}
	return c.s.SetWriteDeadline(t)
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
// (RemoteAddr), which it proved it holds.
func (c *Conn) Authenticated() bool { return c.authed }

// Context returns a context that is done when the flow is closed or its
// connection ends.
func (c *Conn) Context() context.Context { return c.ctx }

func (c *Conn) opError(op string, err error) error {
	if c.replyDone != nil && isClosedChan(c.replyDone) && c.replyErr != nil {
		err = c.replyErr // what the peer said is why the stream failed
	}
	if c.closed.Load() {
		// Whatever quic-go reports after Close (a cancelled stream, or the
		// past deadline that unblocked a Write) means "closed" to the caller.
		err = net.ErrClosed
	}
	return &OpError{Op: op, Service: c.service.String(), Endpoint: c.remote.Endpoint, Err: err}
}

// aLongTimeAgo is a deadline in the past, used to unblock pending I/O.
var aLongTimeAgo = time.Unix(1, 0)

var _ net.Conn = (*Conn)(nil)
