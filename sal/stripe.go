package sal

// A striped carrier (PathAggregate) spreads one flow's bytes over a stream
// on every path that works, so that one flow has the bandwidth of all of
// them, as an MPTCP connection has that of its subflows. To the flow it
// is one more byte stream, like the QUIC stream it replaces: offsets,
// acknowledgements, replay and resume are the flow's, unchanged. A stream
// of the carrier that fails fails the carrier, and the flow resumes, with
// its unacknowledged bytes, on a fresh carrier over the paths that work.
//
// Each stream has a sender that takes the next chunk of what Write handed
// over whenever its last one has left (quic-go's Write returns once the
// bytes are in packets, paced by that connection's congestion window), so
// each path carries what its own congestion control lets through, in
// proportion to it, without a scheduler that guesses at windows. A
// receiver per stream puts the chunks in order by offset (the frames are
// in internal/wire/stripe.go).
//
// Lock order: striped.mu is taken last, after Conn.mu, and never held
// across a stream's I/O or together with Host.mu.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/sal/internal/wire"
)

// dataStream is what carries a flow's bytes: a QUIC stream, or a striped
// carrier over several.
type dataStream interface {
	io.Reader
	io.Writer
	Close() error // FIN after what was written
	CancelRead(quic.StreamErrorCode)
	CancelWrite(quic.StreamErrorCode)
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	// Context is done when the send side is over; its cause says why.
	Context() context.Context
}

var (
	_ dataStream = (*quic.Stream)(nil)
	_ dataStream = (*striped)(nil)
)

const (
	// stripeChunk is what one stream's sender takes at a time: small
	// enough that a slow path does not hold back the end of a Write for
	// long, large enough that the 10-byte header costs nothing.
	stripeChunk = 16 << 10
	// stripeQueue bounds what Write hands over ahead of the senders.
	stripeQueue = 64 << 10
	// minStripeWindow is the least receive window a peer may announce,
	// and what a dialer assumes before the Reply says.
	minStripeWindow = 256 << 10
	maxStripes      = 8 // streams per carrier: one per path, and paths are few
)

// stripeTag proves, in a Stripe, knowledge of the flow's secret.
func stripeTag(secret [secretLen]byte, flowID, carrierID uint64) [secretLen]byte {
	m := hmac.New(sha256.New, secret[:])
	var b [6 + 16]byte
	copy(b[:], "stripe")
	binary.BigEndian.PutUint64(b[6:14], flowID)
	binary.BigEndian.PutUint64(b[14:], carrierID)
	m.Write(b[:])
	var tag [secretLen]byte
	m.Sum(tag[:0])
	return tag
}

// stripeWindow is the receive window this Host announces: how far past
// what a flow has read a chunk may reach.
func (h *Host) stripeWindow() uint32 {
	return uint32(min(max(h.cfg.flowBuffer(), minStripeWindow), 1<<30))
}

// stripesExt is the ExtStripes TLV with this Host's window.
func (h *Host) stripesExt() []byte {
	return mustTLV(wire.ExtStripes, wire.StripesTLV(h.stripeWindow()))
}

// peerStripes reads a peer's ExtStripes: whether it is there, and its
// window, or an error if it is malformed.
func peerStripes(ext []byte) (window uint64, present bool, err error) {
	v, ok := wire.LookupTLV(ext, wire.ExtStripes)
	if !ok {
		return 0, false, nil
	}
	w, ok := wire.ParseStripesTLV(v)
	if !ok {
		return 0, true, fmt.Errorf("%w: bad stripes window", ErrProtocol)
	}
	return uint64(w), true, nil
}

// substream is one stream of a striped carrier.
type substream struct {
	s    *quic.Stream
	sess *session
	peer *peer // a dialer's further stream: the reference it holds on its connection
	// joined: chunks may go out on it. A dialer's further stream joins
	// once the listener's Reply says yes; guarded by striped.mu.
	joined bool
	ended  bool // the peer ended its side; guarded by striped.mu
	left   bool // refused: its sender stops; guarded by striped.mu
}

// striped is a carrier's byte stream spread over several QUIC streams.
type striped struct {
	h        *Host
	flow     *Conn    // set before the carrier is shared
	car      *carrier // the carrier it is the stream of
	window   uint64   // ours
	ctx      context.Context
	cancel   context.CancelCauseFunc
	rdl, wdl *deadline

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	subs    []*substream  // the first is the anchor, which the headers began
	// Sending.
	peerWin  uint64 // the peer's receive window
	pending  []byte // handed over by Write; pending[head:] is not yet taken by a sender
	head     int
	sendOff  uint64 // the offset of pending[head]
	acked    uint64 // the peer read this far
	closing  bool   // Close: End follows the last byte
	writeErr error
	// Receiving.
	readOff     uint64
	chunks      map[uint64][]byte // arrived ahead of readOff, by offset
	endAt       uint64
	endKnown    bool
	readErr     error
	readStopped bool // CancelRead: whatever comes is dropped
}

// newStriped makes a striped carrier over anchor, the stream whose
// headers set it up, on sess's connection. peerWin is the peer's window
// (minStripeWindow until a dialer has the Reply). The anchor's receiver
// starts at once if reading, else at startReading, once the Reply is in.
func (h *Host) newStriped(anchor *quic.Stream, sess *session, peerWin uint64, reading bool) (*striped, bool) {
	st := &striped{
		h:       h,
		window:  uint64(h.stripeWindow()),
		rdl:     new(deadline),
		wdl:     new(deadline),
		changed: make(chan struct{}),
		peerWin: peerWin,
		chunks:  make(map[uint64][]byte),
	}
	st.ctx, st.cancel = context.WithCancelCause(context.Background())
	sub := &substream{s: anchor, sess: sess, joined: true}
	st.subs = []*substream{sub}
	if !st.start(sub, true, reading) {
		st.cancel(net.ErrClosed)
		return nil, false
	}
	return st, true
}

// start runs sub's sender and, if reading, its receiver, counted by the
// Host's WaitGroup; false if the Host is closed.
func (st *striped) start(sub *substream, first, reading bool) bool {
	h := st.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Go(func() { st.sendLoop(sub, first) })
	if reading {
		h.wg.Go(func() { st.recvLoop(sub, false) })
	}
	return true
}

// startReading starts the anchor's receiver, once a dialer has read the
// Reply from it.
func (st *striped) startReading() {
	anchor := st.subs[0] // never changes
	anchor.s.SetReadDeadline(time.Time{})
	h := st.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.wg.Go(func() { st.recvLoop(anchor, false) })
	}
}

// setPeerWindow records the window the peer's Reply announced.
func (st *striped) setPeerWindow(w uint64) {
	st.mu.Lock()
	st.peerWin = w
	st.broadcastLocked()
	st.mu.Unlock()
}

// uses reports whether one of the carrier's streams is on sess's connection.
func (st *striped) uses(sess *session) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, sub := range st.subs {
		if sub.sess == sess {
			return true
		}
	}
	return false
}

// sessions returns the connections the carrier's further streams use.
func (st *striped) sessions() []*session {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]*session, 0, len(st.subs)-1)
	for _, sub := range st.subs[1:] {
		out = append(out, sub.sess)
	}
	return out
}

// join adds a further stream. A dialer's (awaitReply) reads the
// listener's Reply first; a listener's has answered already. It reports
// false if the carrier has one on that connection, or is over.
func (st *striped) join(sub *substream, awaitReply bool) bool {
	st.mu.Lock()
	ok := st.writeErr == nil && st.readErr == nil && len(st.subs) < maxStripes
	for _, s := range st.subs {
		ok = ok && s.sess != sub.sess
	}
	if ok {
		sub.joined = !awaitReply
		st.subs = append(st.subs, sub)
	}
	st.mu.Unlock()
	if !ok {
		return false
	}
	h := st.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return true // the carrier's drop gives it back
	}
	h.wg.Go(func() { st.sendLoop(sub, false) })
	h.wg.Go(func() { st.recvLoop(sub, awaitReply) })
	return true
}

// leave takes away a further stream the listener refused; nothing went
// out on it.
func (st *striped) leave(sub *substream) {
	st.mu.Lock()
	sub.left = true
	st.broadcastLocked()
	for i, s := range st.subs {
		if s == sub {
			st.subs = append(st.subs[:i], st.subs[i+1:]...)
			break
		}
	}
	p := sub.peer
	sub.peer = nil // given back once: the carrier's drop may come first (release)
	st.mu.Unlock()
	sub.s.CancelRead(streamClosed)
	sub.s.CancelWrite(streamClosed)
	sub.sess.detachCarrier(st.flow, st.car)
	if p != nil {
		p.host.releasePeer(p)
	}
}

// release gives back the references the further streams hold; the
// carrier is dropped.
func (st *striped) release() {
	st.mu.Lock()
	var peers []*peer
	for _, sub := range st.subs[1:] {
		if sub.peer != nil {
			peers = append(peers, sub.peer)
			sub.peer = nil // once: a stream still awaiting its Reply leaves after this
		}
	}
	st.mu.Unlock()
	for _, p := range peers {
		p.host.releasePeer(p)
	}
	st.cancel(net.ErrClosed) // (a no-op if the send side failed before)
}

func (st *striped) broadcastLocked() {
	close(st.changed)
	st.changed = make(chan struct{})
}

// Write hands p to the senders. It returns once all of p is taken, or
// the carrier fails.
func (st *striped) Write(p []byte) (int, error) {
	n := 0
	for {
		st.mu.Lock()
		if st.writeErr != nil {
			err := st.writeErr
			st.mu.Unlock()
			return n, err
		}
		if st.closing {
			st.mu.Unlock()
			return n, errors.New("sal: write on a closed carrier")
		}
		if room := stripeQueue - (len(st.pending) - st.head); room > 0 && n < len(p) {
			k := min(room, len(p)-n)
			if st.head > 0 && len(st.pending)+k > cap(st.pending) {
				// Move the untaken bytes to the front once, rather than
				// on every chunk a sender takes.
				st.pending = st.pending[:copy(st.pending, st.pending[st.head:])]
				st.head = 0
			}
			st.pending = append(st.pending, p[n:n+k]...)
			n += k
			st.broadcastLocked()
		}
		if n == len(p) {
			st.mu.Unlock()
			return n, nil
		}
		changed := st.changed
		st.mu.Unlock()
		select {
		case <-changed:
		case <-st.wdl.wait():
			return n, os.ErrDeadlineExceeded
		}
	}
}

// sendLoop sends the chunks sub takes, and, on the anchor (first), the
// End once the writer is done.
func (st *striped) sendLoop(sub *substream, first bool) {
	buf := make([]byte, 0, wire.ChunkHeaderLen+stripeChunk)
	for {
		st.mu.Lock()
		var k int
		for {
			if st.writeErr != nil || sub.left {
				st.mu.Unlock()
				return
			}
			if sub.joined && len(st.pending) > st.head && st.sendOff < st.acked+st.peerWin {
				k = int(min(uint64(len(st.pending)-st.head), stripeChunk, st.acked+st.peerWin-st.sendOff))
				break
			}
			if st.closing && len(st.pending) == st.head {
				end := st.sendOff
				st.mu.Unlock()
				if first {
					buf = wire.AppendChunkHeader(buf[:0], end, 0)
					if _, err := sub.s.Write(buf); err != nil {
						st.fail(sub, err, true)
						return
					}
				}
				sub.s.Close()
				return
			}
			changed := st.changed
			st.mu.Unlock()
			<-changed
			st.mu.Lock()
		}
		buf = wire.AppendChunkHeader(buf[:0], st.sendOff, k)
		buf = append(buf, st.pending[st.head:st.head+k]...)
		if st.head += k; st.head == len(st.pending) {
			st.pending, st.head = st.pending[:0], 0
		}
		st.sendOff += uint64(k)
		st.broadcastLocked()
		st.mu.Unlock()
		sub.sess.wrote.Add(1)
		if _, err := sub.s.Write(buf); err != nil {
			st.fail(sub, err, true)
			return
		}
	}
}

// recvLoop reads sub's chunks into the reordering buffer. A dialer's
// further stream (awaitReply) begins with the listener's Reply.
func (st *striped) recvLoop(sub *substream, awaitReply bool) {
	if awaitReply {
		reply, err := wire.ReadReply(sub.s)
		if err != nil || reply.Status != wire.StatusOK {
			st.leave(sub) // refused, or gone: nothing went out on it
			return
		}
		st.mu.Lock()
		sub.joined = true
		st.broadcastLocked()
		st.mu.Unlock()
	}
	var hdr [wire.ChunkHeaderLen]byte
	for {
		off, n, err := wire.ReadChunkHeader(sub.s, &hdr)
		if err == nil {
			err = st.admit(off, n)
		}
		if err == nil && n > 0 {
			data := make([]byte, n)
			if _, err = io.ReadFull(sub.s, data); err == nil {
				st.arrived(off, data)
				continue
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
		}
		if err == io.EOF || st.leftByPeer(sub, err) {
			st.mu.Lock()
			sub.ended = true
			st.broadcastLocked()
			st.mu.Unlock()
			return
		}
		if err != nil {
			st.fail(sub, err, false)
			return
		}
	}
}

// leftByPeer reports whether err says that the peer took sub, a further
// stream, out of the carrier with leave: a reset with streamClosed, which
// a dialer sends only on a stream that carried none of its chunks (it
// joins further streams before their header goes out, and sends on them
// only once the Reply is in). The carrier goes on over its other streams.
func (st *striped) leftByPeer(sub *substream, err error) bool {
	var se *quic.StreamError
	if !errors.As(err, &se) || !se.Remote || se.ErrorCode != streamClosed {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.subs) > 0 && st.subs[0] != sub
}

// errStripeWindow: a peer sent a chunk beyond the window this end
// announced, or a second End.
var errStripeWindow = fmt.Errorf("%w: a chunk beyond the stripes window", ErrProtocol)

// admit checks a chunk's (or, with n 0, the End's) place before its
// bytes are read.
func (st *striped) admit(off uint64, n int) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if n == 0 {
		if st.endKnown && st.endAt != off || off < st.readOff {
			return fmt.Errorf("%w: a second or misplaced End", ErrProtocol)
		}
		st.endAt, st.endKnown = off, true
		st.broadcastLocked()
		return nil
	}
	if off+uint64(n) > st.readOff+st.window || st.endKnown && off+uint64(n) > st.endAt {
		return errStripeWindow
	}
	return nil
}

// arrived files a chunk.
func (st *striped) arrived(off uint64, data []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.readStopped || off+uint64(len(data)) <= st.readOff {
		return
	}
	if off < st.readOff {
		data = data[st.readOff-off:]
		off = st.readOff
	}
	if _, dup := st.chunks[off]; dup {
		return // a peer resending is broken; the first copy stands
	}
	st.chunks[off] = data
	if off == st.readOff {
		st.broadcastLocked()
	}
}

// fail records sub's error: for the direction it came from (writing),
// and for both if the stream or its connection is gone rather than ended
// by the peer in one direction.
func (st *striped) fail(sub *substream, err error, writing bool) {
	var se *quic.StreamError
	oneWay := errors.As(err, &se) && se.ErrorCode != streamMoved
	st.mu.Lock()
	defer st.mu.Unlock()
	if !writing && st.readStopped {
		return // our own CancelRead
	}
	if writing || !oneWay {
		if st.writeErr == nil {
			st.writeErr = err
			st.pending, st.head = nil, 0
			st.cancel(err)
		}
	}
	if !writing || !oneWay {
		if st.readErr == nil {
			st.readErr = err
		}
	}
	st.broadcastLocked()
}

// Read reads the carrier's bytes in order.
func (st *striped) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		st.mu.Lock()
		if st.readStopped {
			err := st.readErr
			st.mu.Unlock()
			return 0, err
		}
		if data, ok := st.chunks[st.readOff]; ok {
			n := copy(p, data)
			delete(st.chunks, st.readOff)
			st.readOff += uint64(n)
			if n < len(data) {
				st.chunks[st.readOff] = data[n:]
			}
			st.mu.Unlock()
			return n, nil
		}
		if st.endKnown && st.readOff >= st.endAt {
			st.mu.Unlock()
			return 0, io.EOF
		}
		if st.readErr != nil {
			err := st.readErr
			st.mu.Unlock()
			return 0, err
		}
		if st.allEndedLocked() {
			st.mu.Unlock()
			return 0, io.ErrUnexpectedEOF
		}
		changed := st.changed
		st.mu.Unlock()
		select {
		case <-changed:
		case <-st.rdl.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// allEndedLocked: every stream ended without the bytes up to the End.
func (st *striped) allEndedLocked() bool {
	for _, sub := range st.subs {
		if !sub.ended && sub.joined {
			return false
		}
	}
	return true
}

// ackedTo records that the peer read the carrier's bytes up to off.
func (st *striped) ackedTo(off uint64) {
	st.mu.Lock()
	if off > st.acked {
		st.acked = off
		st.broadcastLocked()
	}
	st.mu.Unlock()
}

// Close sends the End after the last byte written, and ends the streams.
func (st *striped) Close() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.writeErr != nil {
		return st.writeErr
	}
	st.closing = true
	st.broadcastLocked()
	return nil
}

func (st *striped) CancelRead(code quic.StreamErrorCode) {
	st.mu.Lock()
	if !st.readStopped {
		st.readStopped = true
		st.readErr = &quic.StreamError{StreamID: st.subs[0].s.StreamID(), ErrorCode: code}
		clear(st.chunks)
		st.broadcastLocked()
	}
	subs := append([]*substream(nil), st.subs...)
	st.mu.Unlock()
	for _, sub := range subs {
		sub.s.CancelRead(code)
	}
}

func (st *striped) CancelWrite(code quic.StreamErrorCode) {
	st.mu.Lock()
	if st.writeErr == nil {
		st.writeErr = &quic.StreamError{StreamID: st.subs[0].s.StreamID(), ErrorCode: code}
		st.pending, st.head = nil, 0
		st.cancel(st.writeErr)
		st.broadcastLocked()
	}
	subs := append([]*substream(nil), st.subs...)
	st.mu.Unlock()
	for _, sub := range subs {
		sub.s.CancelWrite(code)
	}
}

func (st *striped) SetReadDeadline(t time.Time) error  { st.rdl.set(t); return nil }
func (st *striped) SetWriteDeadline(t time.Time) error { st.wdl.set(t); return nil }
func (st *striped) Context() context.Context           { return st.ctx }
