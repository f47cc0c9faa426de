package sal

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal/internal/wire"
	"github.com/stretchr/testify/require"
)

// rawPeer dials h with quic-go directly, as a hostile client would: it
// speaks as much of the SAL as it likes.
func rawPeer(t *testing.T, h *Host, conf *quic.Config) *quic.Conn {
	t.Helper()
	id, err := newIdentity(nil)
	require.NoError(t, err)
	return rawPeerAs(t, h, id, conf)
}

// rawPeerAs is rawPeer with the identity given.
func rawPeerAs(t *testing.T, h *Host, id *identity, conf *quic.Config) *quic.Conn {
	t.Helper()
	tr := &quic.Transport{Conn: mustListenUDP(t)}
	t.Cleanup(func() { tr.Close() })
	qc, err := tr.Dial(testCtx(t), net.UDPAddrFromAddrPort(h.LocalAddr()), id.clientTLS(""), conf)
	require.NoError(t, err)
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

// rawOpen opens a flow to service on qc and returns its stream and the
// status of the listener's Reply.
func rawOpen(t *testing.T, qc *quic.Conn, service string) (*quic.Stream, wire.Reply) {
	t.Helper()
	s, err := qc.OpenStreamSync(testCtx(t))
	require.NoError(t, err)
	hdr, err := wire.AppendOpen(nil, wire.Open{FlowID: newFlowID(), Service: service})
	require.NoError(t, err)
	_, err = s.Write(hdr)
	require.NoError(t, err)
	s.SetReadDeadline(time.Now().Add(quick))
	reply, err := wire.ReadReply(s)
	require.NoError(t, err)
	s.SetReadDeadline(time.Time{})
	return s, reply
}

// serveEach hands every flow l accepts to handle, in a goroutine of its
// own, until the test ends, then closes the flow.
func serveEach(t *testing.T, l *Listener, handle func(*Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() {
		for {
			c, err := l.AcceptContext(testCtx(t))
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
}

// serveEcho echoes every flow l accepts.
func serveEcho(t *testing.T, l *Listener) {
	serveEach(t, l, func(c *Conn) { io.Copy(c, c) })
}

// echoChecked sends n random bytes over a new flow to service and checks
// that exactly they come back.
func echoChecked(t *testing.T, client *Host, service string, n int) error {
	data := randomBytes(n, uint64(n))
	return exchangeChecked(client, service, data, data)
}

// exchangeChecked opens a flow to service, sends send and half-closes,
// and checks that it reads exactly want to the end.
func exchangeChecked(client *Host, service string, send, want []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), quick)
	defer cancel()
	c, err := client.Dial(ctx, service)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(quick))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(send)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if got != int64(len(want)) || [32]byte(h.Sum(nil)) != sha256.Sum256(want) {
		return errors.New("flow corrupted")
	}
	return nil
}

// TestUnacknowledgingPeerCannotBlockOthers: a peer that reads its flows at
// the QUIC level but never acknowledges them fills its connection's share
// of HostBuffer, and no more; an honest client's downloads go on,
// byte-exact. When the peer closes its connection, the memory comes back
// at once, not after ResumeTimeout. (Before shares, the attacker's eight
// flows took all of HostBuffer and every other flow's Write blocked.)
func TestUnacknowledgingPeerCannotBlockOthers(t *testing.T) {
	const flowBuf, hostBuf = 512 << 10, 2 << 20
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, FlowBuffer: flowBuf, HostBuffer: hostBuf, StallTimeout: -1})
	client := newHost(t, Config{Resolver: mem})
	l, err := server.Listen(testCtx(t), "fair.demo")
	require.NoError(t, err)
	payload := randomBytes(1<<20, 3)
	// Eight flows want 8 MiB kept: four times HostBuffer.
	serveEach(t, l, func(c *Conn) { c.Write(payload) })

	attacker := rawPeer(t, server, nil)
	var wg sync.WaitGroup
	defer func() {
		attacker.CloseWithError(0, "")
		wg.Wait()
	}()
	for range 8 {
		s, reply := rawOpen(t, attacker, "fair.demo")
		require.Equal(t, wire.StatusOK, reply.Status)
		wg.Go(func() { io.Copy(io.Discard, s) }) // read, never acknowledge
	}
	require.Eventually(t, func() bool { return server.LimitStats().BufferWaits > 0 }, quick, 10*time.Millisecond,
		"the attacker's flows fill its share and wait for room, counted")
	require.LessOrEqual(t, server.budget.inUse(), server.cfg.connBuffer())

	for i := range 3 {
		require.NoError(t, exchangeChecked(client, "fair.demo", nil, payload), "honest download %d", i)
	}
	require.LessOrEqual(t, server.budget.inUse(), hostBuf)

	attacker.CloseWithError(0, "bye")
	require.Eventually(t, func() bool { return server.budget.inUse() == 0 }, quick, 10*time.Millisecond,
		"a closed connection's flows give their memory back at once")
}

// TestStalledPeerIsReset: a flow whose peer takes everything at the QUIC
// level, is heard, and acknowledges nothing fails with ErrStalled after
// StallTimeout, and the peer sees its stream reset; a roam peer that only
// reads slowly (QUIC flow control holds the data back) is left alone.
func TestStalledPeerIsReset(t *testing.T) {
	const stallAfter = 300 * time.Millisecond
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, FlowBuffer: 2 << 20, StallTimeout: stallAfter})
	client := newHost(t, Config{Resolver: mem})
	l, err := server.Listen(testCtx(t), "stall.demo")
	require.NoError(t, err)

	writeAll := func(c *Conn, n int) <-chan error {
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(randomBytes(n, 7))
			errc <- err
		}()
		return errc
	}

	t.Run("hostile", func(t *testing.T) {
		attacker := rawPeer(t, server, &quic.Config{KeepAlivePeriod: 50 * time.Millisecond})
		acc := accept(t, l)
		s, reply := rawOpen(t, attacker, "stall.demo")
		require.Equal(t, wire.StatusOK, reply.Status)
		sc := <-acc
		require.NotNil(t, sc)
		defer sc.Close()
		readErr := make(chan error, 1)
		go func() { _, err := io.Copy(io.Discard, s); readErr <- err }()

		start := time.Now()
		select {
		case err := <-writeAll(sc, 8<<20):
			require.ErrorIs(t, err, ErrStalled)
			require.ErrorIs(t, err, ErrFlowLost)
			require.GreaterOrEqual(t, time.Since(start), stallAfter)
		case <-time.After(quick):
			t.Fatal("a Write to a peer that never acknowledges blocked past StallTimeout")
		}
		var se *quic.StreamError
		require.ErrorAs(t, <-readErr, &se)
		require.Equal(t, streamStalled, se.ErrorCode)
		require.EqualValues(t, 1, server.LimitStats().FlowsStalled)
		require.Eventually(t, func() bool { return server.budget.inUse() == 0 }, quick, 10*time.Millisecond)
	})

	t.Run("slow reader", func(t *testing.T) {
		acc := accept(t, l)
		c, err := client.Dial(testCtx(t), "stall.demo")
		require.NoError(t, err)
		defer c.Close()
		sc := <-acc
		require.NotNil(t, sc)
		defer sc.Close()
		const n = 4 << 20
		done := writeAll(sc, n)
		time.Sleep(6 * stallAfter) // the reader sleeps; the writer waits
		h := sha256.New()
		_, err = io.CopyN(h, c, n)
		require.NoError(t, err)
		require.NoError(t, <-done)
		require.Equal(t, sha256.Sum256(randomBytes(n, 7)), [32]byte(h.Sum(nil)))
		require.EqualValues(t, 1, server.LimitStats().FlowsStalled, "only the hostile flow")
	})
}

// TestFlowsPerConnLimit: past MaxFlowsPerConn a connection's new flows are
// refused with a LimitError that names the limit; closing one makes room.
func TestFlowsPerConnLimit(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, MaxFlowsPerConn: 4})
	client := newHost(t, Config{Resolver: mem})
	l, err := server.Listen(testCtx(t), "many.demo")
	require.NoError(t, err)
	serveEcho(t, l)

	var flows []*Conn
	for range 4 {
		c, err := client.Dial(testCtx(t), "many.demo")
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Write([]byte("x")) // the listener has it once this comes back
		require.NoError(t, err)
		_, err = io.ReadFull(c, make([]byte, 1))
		require.NoError(t, err)
		flows = append(flows, c)
	}
	_, err = client.Dial(testCtx(t), "many.demo")
	require.ErrorIs(t, err, ErrLimit)
	var le *LimitError
	require.ErrorAs(t, err, &le)
	require.Equal(t, LimitFlowsPerConn, le.Limit)
	require.Equal(t, 4, le.Max)
	require.EqualValues(t, 1, server.LimitStats().FlowsRefused)

	flows[0].Close()
	require.Eventually(t, func() bool {
		c, err := client.Dial(testCtx(t), "many.demo")
		if err == nil {
			c.Close()
		}
		return err == nil
	}, quick, 20*time.Millisecond, "a closed flow makes room")
}

// TestConnsPerKeyAndAddrLimits: a key past MaxConnsPerKey loses its least
// used connection to the newest (closed "moved", so flows on it would
// resume); an address past MaxConnsPerAddr loses an idle connection, and
// when all of them carry flows, the new one is closed as its handshake ends
// and the dialer's flow fails with the LimitError.
func TestConnsPerKeyAndAddrLimits(t *testing.T) {
	t.Run("key", func(t *testing.T) {
		mem := resolve.NewMemory()
		server := newHost(t, Config{Resolver: mem, MaxConnsPerKey: 2})
		l, err := server.Listen(testCtx(t), "keyed.demo")
		require.NoError(t, err)
		serveEcho(t, l)
		id, err := newIdentity(nil)
		require.NoError(t, err)
		var conns []*quic.Conn
		for i := range 3 {
			conns = append(conns, rawPeerAs(t, server, id, nil))
			// One at a time, so that their idle times differ.
			require.Eventually(t, func() bool {
				return admitted(server) == min(i+1, 2) && server.LimitStats().ConnsEvicted == uint64(max(0, i-1))
			}, quick, time.Millisecond)
			time.Sleep(5 * time.Millisecond)
		}
		select {
		case <-conns[0].Context().Done():
		case <-time.After(quick):
			t.Fatal("the key's third connection left the first open")
		}
		var ae *quic.ApplicationError
		require.ErrorAs(t, context.Cause(conns[0].Context()), &ae)
		require.Equal(t, codeMoved, ae.ErrorCode)
		require.NoError(t, conns[2].Context().Err(), "the newest stays")
		require.EqualValues(t, 1, server.LimitStats().ConnsEvicted)
		require.NoError(t, echoChecked(t, newHost(t, Config{Resolver: mem}), "keyed.demo", 1000), "other keys are not held back")
	})

	t.Run("address", func(t *testing.T) {
		mem := resolve.NewMemory()
		server := newHost(t, Config{Resolver: mem, MaxConnsPerAddr: 2})
		l, err := server.Listen(testCtx(t), "addr.demo")
		require.NoError(t, err)
		serveEcho(t, l)
		idle := rawPeer(t, server, nil)
		require.Eventually(t, func() bool { return admitted(server) == 1 }, quick, time.Millisecond)
		var busy []*Conn
		for range 2 { // the second evicts the idle connection
			c, err := newHost(t, Config{Resolver: mem}).Dial(testCtx(t), "addr.demo")
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Write([]byte("x"))
			require.NoError(t, err)
			_, err = io.ReadFull(c, make([]byte, 1))
			require.NoError(t, err)
			busy = append(busy, c)
		}
		<-idle.Context().Done()
		require.EqualValues(t, 1, server.LimitStats().ConnsEvicted, "idle closed: %v", context.Cause(idle.Context()))

		c, err := newHost(t, Config{Resolver: mem}).Dial(testCtx(t), "addr.demo")
		if err == nil { // the first flow of a connection opens optimistically
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(quick))
			_, err = c.Read(make([]byte, 1))
		}
		require.ErrorIs(t, err, ErrLimit)
		var le *LimitError
		require.ErrorAs(t, err, &le)
		require.Equal(t, LimitConnsPerAddr, le.Limit)
		require.Equal(t, 2, le.Max)
		require.EqualValues(t, 1, server.LimitStats().ConnsRefusedAddr)
		for _, c := range busy {
			_, err := c.Write([]byte("y"))
			require.NoError(t, err, "the busy connections carry on")
		}
	})
}

// admitted counts the connections peers dialed that h has admitted.
func admitted(h *Host) int {
	h.limits.mu.Lock()
	defer h.limits.mu.Unlock()
	n := 0
	for _, set := range h.limits.byAddr {
		n += len(set)
	}
	return n
}

// TestIdleInboundConnClosed: a connection that carries no flow is closed by
// the Host it reached after InboundIdleTimeout, and the dialer simply dials
// afresh for its next flow.
func TestIdleInboundConnClosed(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, InboundIdleTimeout: 200 * time.Millisecond})
	l, err := server.Listen(testCtx(t), "idle.demo")
	require.NoError(t, err)
	serveEcho(t, l)

	squatter := rawPeer(t, server, nil)
	select {
	case <-squatter.Context().Done():
	case <-time.After(quick):
		t.Fatal("a connection with no flows stayed open")
	}
	var ae *quic.ApplicationError
	require.ErrorAs(t, context.Cause(squatter.Context()), &ae)
	require.Equal(t, codeIdle, ae.ErrorCode)

	client := newHost(t, Config{Resolver: mem})
	require.NoError(t, echoChecked(t, client, "idle.demo", 1000))
	time.Sleep(500 * time.Millisecond) // its connection is closed meanwhile
	require.NoError(t, echoChecked(t, client, "idle.demo", 1000))
	require.GreaterOrEqual(t, server.LimitStats().ConnsIdleClosed, uint64(2))
}

// blackholeConn is a socket that sends but never receives: a client
// flooding Initials from spoofed addresses never hears the answers.
type blackholeConn struct{ net.PacketConn }

func (b blackholeConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		if _, _, err := b.PacketConn.ReadFrom(p); err != nil {
			return 0, nil, err
		}
	}
}

// TestHandshakeFloodCostsNoState: Initials that never complete their
// handshake (their sender cannot hear the answers, as with spoofed
// addresses) hold at most RetryThreshold connections: past it the Host
// answers with stateless Retries. An honest dial still succeeds; past
// MaxHandshakes handshakes are refused with a LimitError.
func TestHandshakeFloodCostsNoState(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, RetryThreshold: 4})
	l, err := server.Listen(testCtx(t), "flood.demo")
	require.NoError(t, err)
	serveEcho(t, l)

	id, err := newIdentity(nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			tr := &quic.Transport{Conn: blackholeConn{mustListenUDP(t)}}
			defer tr.Close()
			tr.Dial(ctx, net.UDPAddrFromAddrPort(server.LocalAddr()), id.clientTLS(""), &quic.Config{HandshakeIdleTimeout: quick})
		})
	}
	require.Eventually(t, func() bool { return server.LimitStats().Retries >= 30 }, quick, 10*time.Millisecond,
		"past the threshold, Initials get a Retry")
	require.LessOrEqual(t, server.limits.handshakes.Load(), int64(4), "and no state")

	client := newHost(t, Config{Resolver: mem})
	require.NoError(t, echoChecked(t, client, "flood.demo", 1000), "an honest dialer passes the Retry")
	cancel()
	wg.Wait()

	// A hard cap: with no Retry and one handshake allowed, a second is refused.
	capped := newHost(t, Config{Resolver: mem, MaxHandshakes: 1, RetryThreshold: 1 << 20})
	cl, err := capped.Listen(testCtx(t), "capped.demo")
	require.NoError(t, err)
	serveEcho(t, cl)
	capped.limits.handshakes.Add(1) // one in progress, held by the test
	_, err = newHost(t, Config{Resolver: mem}).Dial(testCtx(t), "capped.demo")
	require.ErrorIs(t, err, ErrLimit)
	var le *LimitError
	require.ErrorAs(t, err, &le)
	require.Equal(t, LimitHandshakes, le.Limit)
	require.GreaterOrEqual(t, capped.LimitStats().HandshakesRefused, uint64(1), "(the dialer sends its Initial again)")
	capped.limits.handshakes.Add(-1)
}

// TestReconnectSkipsRetry: a Host keeps the tokens the Hosts it dials hand
// out, so that its next connection to a Host asking every handshake for a
// Retry goes without one.
func TestReconnectSkipsRetry(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, RetryThreshold: -1})
	l, err := server.Listen(testCtx(t), "token.demo")
	require.NoError(t, err)
	serveEcho(t, l)
	client := newHost(t, Config{Resolver: mem, IdleConnTimeout: 50 * time.Millisecond})
	require.NoError(t, echoChecked(t, client, "token.demo", 1000))
	retries := server.LimitStats().Retries
	require.Positive(t, retries, "the first handshake proves its address with a Retry")
	require.Eventually(t, func() bool { return admitted(server) == 0 }, quick, 10*time.Millisecond, "the idle connection closes")
	require.NoError(t, echoChecked(t, client, "token.demo", 1000))
	require.Equal(t, retries, server.LimitStats().Retries, "the second presents its token instead")
}

// TestBacklogShare: once a Listener's accept queue is half full, a
// connection that holds an eighth of it gets no more, so that a peer that
// opens flows faster than the application accepts them cannot make another
// peer's dial fail.
func TestBacklogShare(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, Backlog: 16})
	l, err := server.Listen(testCtx(t), "queue.demo")
	require.NoError(t, err)
	flooder := rawPeer(t, server, nil)
	statuses := map[wire.Status]int{}
	for range 12 {
		_, reply := rawOpen(t, flooder, "queue.demo")
		statuses[reply.Status]++
	}
	require.Equal(t, map[wire.Status]int{wire.StatusOK: 8, wire.StatusBusy: 4}, statuses,
		"one peer fills half of sixteen, then is refused")
	require.EqualValues(t, 4, server.LimitStats().BacklogRefused)

	_, reply := rawOpen(t, rawPeer(t, server, nil), "queue.demo")
	require.Equal(t, wire.StatusOK, reply.Status, "another peer still gets in")
	for range 9 { // all nine are delivered
		c, err := l.AcceptContext(testCtx(t))
		require.NoError(t, err)
		c.Close()
	}
}

// TestListenerFlowsEndWithTheirDialer: at the listening end a flow ends at
// once, not after ResumeTimeout, when its dialer closes the connection
// other than to move (it will resume nowhere), or when the flow carries no
// resume secret (no resume could prove itself its dialer). A close that
// says "moved" keeps a flow with a secret waiting for its resume.
func TestListenerFlowsEndWithTheirDialer(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem}) // ResumeTimeout 60 s
	l, err := server.Listen(testCtx(t), "gone.demo")
	require.NoError(t, err)
	lost := func(t *testing.T, sc *Conn) error {
		t.Helper()
		sc.SetReadDeadline(time.Now().Add(quick))
		_, err := sc.Read(make([]byte, 1))
		return err
	}

	t.Run("closed, not moved", func(t *testing.T) {
		client := newHost(t, Config{Resolver: mem})
		c, sc := openPair(t, client, l, "gone.demo")
		echo(t, c, sc, "before")
		c.quicConn().CloseWithError(0, "the dialer is gone")
		require.ErrorIs(t, lost(t, sc), ErrFlowLost, "not a wait of ResumeTimeout")
	})

	t.Run("moved, no secret", func(t *testing.T) {
		peer := rawPeer(t, server, nil)
		acc := accept(t, l)
		_, reply := rawOpen(t, peer, "gone.demo")
		require.Equal(t, wire.StatusOK, reply.Status)
		sc := <-acc
		require.NotNil(t, sc)
		peer.CloseWithError(codeMoved, "moved, but nothing can resume")
		require.ErrorIs(t, lost(t, sc), ErrFlowLost)
	})

	t.Run("moved, with a secret", func(t *testing.T) {
		client := newHost(t, Config{Resolver: mem})
		c, sc := openPair(t, client, l, "gone.demo")
		echo(t, c, sc, "before")
		killConn(c) // "moved": the dialer resumes, the listener waits for it
		echo(t, c, sc, "after the resume")
	})
}
