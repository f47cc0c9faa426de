package sal

// Review tests: each TestReview_* demonstrates a bug found in review. They
// are expected to FAIL until the bug is fixed.

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal/internal/wire"
	"github.com/stretchr/testify/require"
)

// rvState returns the flow's state.
func rvState(c *Conn) flowState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// rvWaitState waits up to d for c to reach state s.
func rvWaitState(c *Conn, s flowState, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if rvState(c) == s {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// TestReview_ResumeLoopLostWakeup: a dialer flow whose new carrier fails
// after resumeAt succeeded but before resumeLoop's deferred
// "resuming = false" ran is suspended with no resume loop running and no
// timer: it stays suspended for ever (resumeLoop's deferred reset vs suspend's startResume).
func TestReview_ResumeLoopLostWakeup(t *testing.T) {
	var cp atomic.Pointer[Conn]
	var fired, handled atomic.Bool
	hook := func(e Event) {
		c := cp.Load()
		if e.Kind != EventResumed || c == nil || !fired.CompareAndSwap(false, true) {
			return
		}
		// Still inside resumeLoop (resumed() is called from resumeAt):
		// the new carrier's connection fails now.
		killConn(c)
		rvWaitState(c, flowSuspended, 2*time.Second)
		handled.Store(true)
	}
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, Logger: rvLogger("S")})
	client := newHost(t, Config{Resolver: mem, OnEvent: hook, Logger: rvLogger("C")})
	l, err := server.Listen(testCtx(t), "wakeup.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "wakeup.demo")
	cp.Store(c)

	killConn(c)
	require.Eventually(t, handled.Load, 5*time.Second, time.Millisecond, "first resume never happened")
	require.True(t, rvWaitState(c, flowActive, 3*time.Second),
		"the flow was suspended while resumeLoop was returning and nobody resumes it (state %d)", rvState(c))
	roundTrip(t, c, sc, "after the second failure")
}

// TestReview_ResumeRefusedAfterReaderGone: once the listener got the
// dialer's readerGone ack, acked(readerGone) releases its buffer, which
// sets buf.end = buf.acked (sendbuf.go release). A later Resume carries the
// dialer's true read offset, which exceeds the shrunken end: serveResume
// refuses it as "read offset out of range" (serveResume's offset check) and the dialer
// loses the flow, with the data it wrote before Close.
func TestReview_ResumeRefusedAfterReaderGone(t *testing.T) {
	var clientLog, serverLog eventLog
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, OnEvent: serverLog.record, Logger: rvLogger("S")})
	client := newHost(t, Config{Resolver: mem, OnEvent: clientLog.record, Logger: rvLogger("C")})
	l, err := server.Listen(testCtx(t), "gone2.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "gone2.demo")

	// The listener sends 5 bytes; the dialer reads them and closes at once,
	// before its 5 ms delayed ack goes out: the listener only ever hears
	// readerGone, and its acked offset stays 0.
	_, err = sc.Write([]byte("hello"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 5))
	require.NoError(t, err)
	_, err = c.Write([]byte("bye"))
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.Eventually(t, func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.send.state == sendStopped
	}, 5*time.Second, time.Millisecond, "readerGone never arrived")

	// The listener has not read "bye" nor the FIN; the connection fails, so
	// the dialer must resume to deliver them.
	killConn(c)
	// (Wait until the listener saw it, so that it cannot read "bye" from
	// the old stream's buffer instead.)
	require.Eventually(t, func() bool { return serverLog.count(EventSuspended) > 0 }, 5*time.Second, time.Millisecond)
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(sc)
	require.NoError(t, err, "the listener must read what the dialer wrote before Close, then EOF")
	require.Equal(t, "bye", string(got))
	require.Zero(t, clientLog.count(EventLost), "the dialer's flow must not be lost")
}

// TestReview_WriteDeadlineIgnoredAfterResume: backgroundFlush clears the
// carrier's write deadline (write.go, backgroundFlush) whenever it has anything to send,
// which after a resume is the replay. A deadline the application set
// before the resume is then no longer on the stream, and a Write blocked
// on QUIC flow control never times out.
func TestReview_WriteDeadlineIgnoredAfterResume(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: mem})
	l, err := server.Listen(testCtx(t), "wdl.demo")
	require.NoError(t, err)
	c, _ := openPair(t, client, l, "wdl.demo") // the listener never reads

	dl := time.Now().Add(3 * time.Second)
	require.NoError(t, c.SetWriteDeadline(dl))
	_, err = c.Write(make([]byte, 100<<10)) // fits the stream window
	require.NoError(t, err)
	killConn(c)
	require.Eventually(t, func() bool { return c.Stats().Resumes > 0 && rvState(c) == flowActive },
		5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.send.flush == flushIdle
	}, 5*time.Second, time.Millisecond, "replay flush did not finish")

	done := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, 4<<20)) // blocks on flow control
		done <- err
	}()
	select {
	case err := <-done:
		require.True(t, isTimeoutErr(err), "want a timeout, got %v", err)
	case <-time.After(time.Until(dl) + 3*time.Second):
		t.Fatal("Write blocked past its deadline: the resume's replay flush cleared the stream's write deadline")
	}
}

// TestReview_FinAfterStopSendingSuspends: (1) CloseRead/Close while the
// flow is suspended sends no readerGone, and nothing sends it after the
// resume (only the STOP_SENDING of readDone); (2) the listener's Close then
// hands the FIN to a stream the peer stopped: quic-go's Close returns a
// plain error ("close called for canceled stream"), which classify sorts
// as a carrier failure (classify's fallback), so a healthy flow suspends and is
// lost after ResumeTimeout.
func TestReview_FinAfterStopSendingSuspends(t *testing.T) {
	var serverLog, clientLog eventLog
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, OnEvent: serverLog.record, ResumeTimeout: 2 * time.Second, Logger: rvLogger("S")})
	client := newHost(t, Config{Resolver: mem, OnEvent: clientLog.record, EndpointTimeout: 300 * time.Millisecond, Logger: rvLogger("C")})
	l, err := server.Listen(testCtx(t), "stop.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "stop.demo")

	// Hold the dialer's resume off while it closes its reading side.
	dead := mustListenUDP(t).LocalAddr().(*net.UDPAddr).AddrPort()
	require.NoError(t, client.Table().Set(Rule{Service: "stop.demo", Action: ActionEndpoints,
		Endpoints: []resolve.Endpoint{{Addr: dead}}}))
	killConn(c)
	require.True(t, rvWaitState(c, flowSuspended, 2*time.Second))
	require.NoError(t, c.CloseRead())
	client.Table().Delete("stop.demo")
	require.Eventually(t, func() bool { return clientLog.count(EventResumed) > 0 }, 5*time.Second, time.Millisecond)
	time.Sleep(200 * time.Millisecond) // STOP_SENDING reaches the listener
	require.Zero(t, serverLog.count(EventLost))

	before := serverLog.count(EventSuspended)
	require.NoError(t, sc.Close())
	time.Sleep(3 * time.Second) // > the listener's ResumeTimeout
	require.Equal(t, before, serverLog.count(EventSuspended), "closing a healthy flow suspended it")
	require.Zero(t, serverLog.count(EventLost), "closing a healthy flow lost it")
}

// rvClosedWatch is a resolver whose watches end at once, as a Memory's do
// when it is closed; it counts Resolve calls.
type rvClosedWatch struct {
	*resolve.Memory
	dead     atomic.Pointer[netip.AddrPort]
	resolves atomic.Int64
}

func (r *rvClosedWatch) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	r.resolves.Add(1)
	if d := r.dead.Load(); d != nil {
		return []resolve.Endpoint{{Addr: *d}}, nil
	}
	return r.Memory.Resolve(ctx, service)
}

func (r *rvClosedWatch) Watch(ctx context.Context, service string) (<-chan []resolve.Endpoint, error) {
	ch := make(chan []resolve.Endpoint)
	close(ch)
	return ch, nil
}

// TestReview_ResumeLoopSpinsOnClosedWatch: resumeLoop treats a receive from
// its watch channel as "the service moved" (resumeLoop's two <-updates) but never
// checks ok: a watch that ended (closed channel) cancels every attempt at
// once and skips the backoff, so the loop spins, hammering the resolver and
// dialing, for the whole ResumeTimeout.
func TestReview_ResumeLoopSpinsOnClosedWatch(t *testing.T) {
	mem := resolve.NewMemory()
	rw := &rvClosedWatch{Memory: mem}
	server := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: rw, ResumeTimeout: 500 * time.Millisecond,
		EndpointTimeout: 100 * time.Millisecond})
	l, err := server.Listen(testCtx(t), "spin.demo")
	require.NoError(t, err)
	c, _ := openPair(t, client, l, "spin.demo")

	dead := mustListenUDP(t).LocalAddr().(*net.UDPAddr).AddrPort()
	rw.dead.Store(&dead)
	// The cache still holds the live address; without this the first
	// attempt would simply resume there.
	client.Resolver().(*resolve.Cache).Invalidate("spin.demo")
	start := rw.resolves.Load()
	killConn(c)
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrFlowLost)
	// With the 20 ms..1 s backoff, 500 ms allows about ten attempts.
	require.Less(t, rw.resolves.Load()-start, int64(50), "resume attempts in 500 ms")
}

// rvLogger logs to stderr when RV_DEBUG is set.
func rvLogger(name string) *slog.Logger {
	if os.Getenv("RV_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("h", name)
}

// TestReview_ServeResumeDuplicatesBytes: serveResume snapshots the
// listener's read offset (serveResume: dataRead := c.recv.off) while the old carrier is still
// installed and readable; it detaches it only after writing the Reply
// (serveResume: old := c.car). A Read meanwhile delivers more bytes from the old
// stream, and then the new carrier delivers them again (skip was computed
// from the stale snapshot): bytes are duplicated (or, if the dialer's acked
// offset has moved past its SendFrom, replaced by the zero filler). The old
// stream is still readable whenever the dialer's view of the failure comes
// first: a watch update (followLoop), a lost CONNECTION_CLOSE, an idle
// timeout on one side only. Here a second connection holding the dialer's
// key sends the Resume the dialer would send, while the application reads.
func TestReview_ServeResumeDuplicatesBytes(t *testing.T) {
	const words = 100_000 // 400 kB: fits one stream window
	data := make([]byte, 4*words)
	for i := range words {
		binary.BigEndian.PutUint32(data[4*i:], uint32(i))
	}
	for trial := range 5 {
		mem := resolve.NewMemory()
		server := newHost(t, Config{Resolver: mem})
		client := newHost(t, Config{Resolver: mem})
		l, err := server.Listen(testCtx(t), "dup.demo")
		require.NoError(t, err)
		c, sc := openPair(t, client, l, "dup.demo")
		_, err = c.Write(data)
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond) // all of it waits in the listener's stream

		c.mu.Lock()
		flowID, secret, gen := c.flowID, c.secret, c.gen+100
		c.mu.Unlock()
		tr := &quic.Transport{Conn: mustListenUDP(t)}
		qc, err := tr.Dial(testCtx(t), net.UDPAddrFromAddrPort(server.LocalAddr()), client.id.clientTLS(""), nil)
		require.NoError(t, err)
		s, err := qc.OpenStreamSync(testCtx(t))
		require.NoError(t, err)
		hdr, err := wire.AppendResume(nil, wire.Resume{FlowID: flowID, Gen: gen, Tag: resumeTag(secret, flowID, gen)})
		require.NoError(t, err)

		got := make(chan []byte, 1)
		go func() { // a reader that takes 3 bytes at a time
			var out []byte
			b := make([]byte, 3)
			sc.SetReadDeadline(time.Now().Add(10 * time.Second))
			for len(out) < len(data) {
				n, err := sc.Read(b)
				out = append(out, b[:n]...)
				if err != nil {
					break
				}
			}
			got <- out
		}()
		time.Sleep(time.Millisecond)
		// What the dialer sends on resuming: the Resume, then its data from
		// SendFrom (0: the listener acknowledged nothing).
		_, err = s.Write(append(hdr, data...))
		require.NoError(t, err)
		out := <-got
		qc.CloseWithError(0, "")
		tr.Close()
		for i := range min(words, len(out)/4) {
			if v := binary.BigEndian.Uint32(out[4*i:]); v != uint32(i) {
				t.Fatalf("trial %d: word %d reads %#x (% x): bytes duplicated or replaced around the resume",
					trial, i, v, out[max(0, 4*i-8):min(len(out), 4*i+12)])
			}
		}
		if len(out) != len(data) {
			t.Fatalf("trial %d: read %d bytes, want %d", trial, len(out), len(data))
		}
	}
}

// TestReview_RejectedQueuedFlowUntypedError: Listener.Close resets queued
// flows with streamRejected (Conn.reject), which classify sorts as
// errDirection (classify): the dialer's Read and Write return a bare
// *quic.StreamError ("canceled by remote with error code 17") instead of
// an error wrapping ErrRefused (or ErrFlowLost), and its flow is not over
// until it writes and closes.
func TestReview_RejectedQueuedFlowUntypedError(t *testing.T) {
	_, client, l := pair(t, "rej.demo")
	c, err := client.Dial(testCtx(t), "rej.demo")
	require.NoError(t, err)
	defer c.Close()
	require.Eventually(t, func() bool { return len(l.queue) == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond) // the Reply "ok" is in
	require.NoError(t, l.Close())
	c.SetReadDeadline(time.Now().Add(quick))
	_, err = c.Read(make([]byte, 1))
	require.True(t, errors.Is(err, ErrRefused) || errors.Is(err, ErrFlowLost),
		"a flow its Listener rejected must fail with a typed error, got %v", err)
}

// TestReview_LostKickDropsFin: kick (write.go) starts no flusher while
// one runs, but a running backgroundFlush that has already found nothing
// pending (backgroundFlush) goes back to flushIdle only when it returns: a
// CloseWrite or Close in between queues the FIN, sees a flush running,
// and its FIN is never sent. Every install kicks a flusher, which then
// waits for the write lock behind the application's first Write; "Dial,
// Write, CloseWrite" races with it. The peer never reads io.EOF and the
// flow never finishes.
func TestReview_LostKickDropsFin(t *testing.T) {
	_, client, l := pair(t, "kick.demo")
	const flows = 5000 // the race is narrow: a few thousand flows hit it in most runs
	for i := range flows {
		acc := accept(t, l)
		c, err := client.Dial(testCtx(t), "kick.demo")
		require.NoError(t, err)
		_, err = c.Write([]byte("x"))
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		sc := <-acc
		require.NotNil(t, sc)
		sc.SetReadDeadline(time.Now().Add(2 * time.Second))
		got, err := io.ReadAll(sc)
		if err != nil || string(got) != "x" {
			c.mu.Lock()
			var finSent bool
			if c.car != nil {
				finSent = c.car.finSent
			}
			t.Errorf("flow %d: read %q, %v; dialer: send=%v finSent=%v flush=%d state=%d",
				i, got, err, c.send.state, finSent, c.send.flush, c.state)
			c.mu.Unlock()
		}
		c.Close()
		sc.Close()
		if t.Failed() {
			return
		}
	}
}
