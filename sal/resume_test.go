package sal

import (
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal/internal/wire"
	"github.com/stretchr/testify/require"
)

// transfer streams n checksummed bytes each way over c and sc at once and
// checks that both sides receive exactly what the other sent. During the
// transfer, disrupt is called with the number of bytes the dialer has sent
// so far, after every chunk.
func transfer(t *testing.T, c, sc *Conn, n int, disrupt func(sent int)) {
	t.Helper()
	var watch func(transferProgress)
	if disrupt != nil {
		watch = func(p transferProgress) { disrupt(p.sent) }
	}
	transferWatched(t, c, sc, n, watch)
}

// transferProgress is how far a transfer has got: the bytes the dialer has
// written, and those the listener has read of them.
type transferProgress struct{ sent, received int }

// transferWatched is transfer with a disrupt callback that also sees how
// much of the dialer's bytes the listener has read.
func transferWatched(t *testing.T, c, sc *Conn, n int, disrupt func(transferProgress)) {
	t.Helper()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	var received atomic.Int64 // by the listener
	send := func(w *Conn, seed uint64, progress func(int)) ([32]byte, error) {
		h := sha256.New()
		chunk := randomBytes(64<<10, seed)
		sent := 0
		for sent < n {
			p := chunk[:min(len(chunk), n-sent)]
			chunk[0]++ // vary the data from chunk to chunk
			h.Write(p)
			if _, err := w.Write(p); err != nil {
				return [32]byte{}, err
			}
			sent += len(p)
			if progress != nil {
				progress(sent)
			}
		}
		return [32]byte(h.Sum(nil)), w.CloseWrite()
	}
	recv := func(r *Conn, count *atomic.Int64, out chan<- result) {
		h := sha256.New()
		var w io.Writer = h
		if count != nil {
			w = countingWriter{h, count}
		}
		m, err := io.Copy(w, r)
		out <- result{[32]byte(h.Sum(nil)), m, err}
	}
	var progress func(int)
	if disrupt != nil {
		progress = func(sent int) {
			disrupt(transferProgress{sent: sent, received: int(received.Load())})
		}
	}
	toServer, toClient := make(chan result, 1), make(chan result, 1)
	go recv(sc, &received, toServer)
	go recv(c, nil, toClient)
	var wg sync.WaitGroup
	var sentC, sentS [32]byte
	var errC, errS error
	wg.Add(2)
	go func() { defer wg.Done(); sentC, errC = send(c, 1, progress) }()
	go func() { defer wg.Done(); sentS, errS = send(sc, 2, nil) }()
	wg.Wait()
	require.NoError(t, errC)
	require.NoError(t, errS)
	for _, x := range []struct {
		name string
		ch   chan result
		want [32]byte
	}{{"dialer→listener", toServer, sentC}, {"listener→dialer", toClient, sentS}} {
		select {
		case r := <-x.ch:
			require.NoError(t, r.err, x.name)
			require.Equal(t, int64(n), r.n, x.name)
			require.Equal(t, x.want, r.sum, "%s: checksum", x.name)
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: transfer hung", x.name)
		}
	}
}

// countingWriter counts what it passes to w.
type countingWriter struct {
	w     io.Writer
	count *atomic.Int64
}

func (cw countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.count.Add(int64(n))
	return n, err
}

// spread returns a transfer progress callback that calls event n times,
// evenly spaced over total bytes, and a pointer to how often it has.
func spread(total, n int, event func(i int)) (progress func(sent int), done *int) {
	done = new(int)
	return func(sent int) {
		if *done < n && sent >= (*done+1)*total/(n+1) {
			*done++
			event(*done)
		}
	}, done
}

// echo sends msg from c to sc and back, and checks it; the reply must come
// within quick.
func echo(t *testing.T, c, sc *Conn, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(sc, buf)
	require.NoError(t, err)
	_, err = sc.Write(buf)
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(quick)))
	defer c.SetReadDeadline(time.Time{})
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
}

// openPair dials service from client and accepts it.
func openPair(t *testing.T, client *Host, l *Listener, service string) (c, sc *Conn) {
	t.Helper()
	acc := accept(t, l)
	c, err := client.Dial(testCtx(t), service)
	require.NoError(t, err)
	sc = <-acc
	require.NotNil(t, sc)
	t.Cleanup(func() { c.Close(); sc.Close() })
	return c, sc
}

// killConn ends the QUIC connection that carries c, as a failed path or a
// lost NAT mapping would, but with a signal so the test needs no timeout.
func killConn(c *Conn) {
	if qc := c.quicConn(); qc != nil {
		qc.CloseWithError(codeMoved, "test: connection killed")
	}
}

func TestResumeByteExactAcrossConnectionKills(t *testing.T) {
	var events []Event
	var mu sync.Mutex
	mem := resolve.NewMemory()
	record := func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }
	server := newHost(t, Config{Resolver: mem, OnEvent: record, FlowBuffer: 1 << 20})
	client := newHost(t, Config{Resolver: mem, OnEvent: record, FlowBuffer: 1 << 20})
	l, err := server.Listen(testCtx(t), "resume.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "resume.demo")

	const total = 24 << 20
	progress, kills := spread(total, 5, func(int) { killConn(c) })
	transfer(t, c, sc, total, progress)
	require.Equal(t, 5, *kills)
	st := c.Stats()
	require.GreaterOrEqual(t, st.Resumes, 5, "every kill must be survived by a resume")
	mu.Lock()
	defer mu.Unlock()
	resumed := 0
	for _, e := range events {
		if e.Kind == EventResumed && e.FlowID == c.FlowID() {
			resumed++
		}
		require.NotEqual(t, EventLost, e.Kind, "no flow may be lost: %v", e.Err)
	}
	require.GreaterOrEqual(t, resumed, 10, "both ends report each resume")
}

func TestFlowLostWhenPeerHostCloses(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: mem})
	l, err := server.Listen(testCtx(t), "gone.demo")
	require.NoError(t, err)
	c, _ := openPair(t, client, l, "gone.demo")
	// A Host that shuts down ends its flows at once: nothing will resume them.
	require.NoError(t, server.Close())
	start := time.Now()
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrFlowLost)
	require.Less(t, time.Since(start), quick)
	_, err = c.Write([]byte("x"))
	require.ErrorIs(t, err, ErrFlowLost)
}

func TestFlowLostAfterResumeTimeout(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem, ResumeTimeout: 500 * time.Millisecond})
	client := newHost(t, Config{Resolver: mem, ResumeTimeout: 300 * time.Millisecond, EndpointTimeout: 50 * time.Millisecond})
	l, err := server.Listen(testCtx(t), "away.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "away.demo")
	// The service now answers nowhere the client can reach.
	dead := mustListenUDP(t).LocalAddr().(*net.UDPAddr).AddrPort()
	require.NoError(t, client.Table().Set(Rule{Service: "away.demo", Action: ActionEndpoints,
		Endpoints: []resolve.Endpoint{{Addr: dead}}}))
	start := time.Now() // before the kill: the resume timeout may start at once
	killConn(c)
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrFlowLost)
	require.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond, "the dialer keeps trying for ResumeTimeout")
	require.Less(t, time.Since(start), quick)
	// The listener gives up too once its own ResumeTimeout passes.
	_, err = sc.Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrFlowLost)
}

// rawResume sends a crafted Resume to server over a fresh connection that
// proves key's identity, and returns the Reply's status.
func rawResume(t *testing.T, id *identity, server netip.AddrPort, rs wire.Resume) wire.Status {
	t.Helper()
	tr := &quic.Transport{Conn: mustListenUDP(t)}
	defer tr.Close()
	qc, err := tr.Dial(testCtx(t), net.UDPAddrFromAddrPort(server), id.clientTLS(""), nil)
	require.NoError(t, err)
	defer qc.CloseWithError(0, "")
	s, err := qc.OpenStreamSync(testCtx(t))
	require.NoError(t, err)
	b, err := wire.AppendResume(nil, rs)
	require.NoError(t, err)
	_, err = s.Write(b)
	require.NoError(t, err)
	s.SetReadDeadline(time.Now().Add(quick))
	reply, err := wire.ReadReply(s)
	require.NoError(t, err)
	return reply.Status
}

func TestResumeRefusals(t *testing.T) {
	mem := resolve.NewMemory()
	server := newHost(t, Config{Resolver: mem})
	client := newHost(t, Config{Resolver: mem})
	l, err := server.Listen(testCtx(t), "guard.demo")
	require.NoError(t, err)
	c, sc := openPair(t, client, l, "guard.demo")

	// One genuine resume, so that a generation has been used.
	killConn(c)
	roundTrip(t, c, sc, "after a genuine resume")
	c.mu.Lock()
	usedGen, secret, flowID := c.gen-1, c.secret, c.flowID
	readOff := c.recv.off
	c.mu.Unlock()

	valid := func(gen uint64) wire.Resume {
		return wire.Resume{FlowID: flowID, Gen: gen, Tag: resumeTag(secret, flowID, gen), ReadOff: readOff}
	}
	forged := valid(usedGen + 1)
	forged.Tag[0] ^= 1
	stale := valid(usedGen + 5)
	stale.ReadOff = 1 << 40 // claims to have read bytes never sent
	for _, tc := range []struct {
		name string
		id   *identity
		rs   wire.Resume
	}{
		{"forged tag", client.id, forged},
		{"replayed generation", client.id, valid(usedGen)},
		{"stale offsets", client.id, stale},
		{"another dialer's key", mustIdentity(t), valid(usedGen + 9)},
		{"unknown flow", client.id, wire.Resume{FlowID: flowID + 1, Gen: 100, Tag: resumeTag(secret, flowID+1, 100)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, wire.StatusNoFlow, rawResume(t, tc.id, server.LocalAddr(), tc.rs))
			roundTrip(t, c, sc, "the real flow carries on after: "+tc.name)
		})
	}

	t.Run("closed flow", func(t *testing.T) {
		c.Close()
		sc.Close()
		require.Eventually(t, func() bool { return server.flow(sc.key()) == nil }, quick, time.Millisecond)
		require.Equal(t, wire.StatusNoFlow, rawResume(t, client.id, server.LocalAddr(), valid(usedGen+20)))
	})
}

func mustIdentity(t *testing.T) *identity {
	id, err := newIdentity(nil)
	require.NoError(t, err)
	return id
}

// roundTrip sends a message each way and checks it arrives.
func roundTrip(t *testing.T, c, sc *Conn, msg string) {
	t.Helper()
	for _, p := range [][2]*Conn{{c, sc}, {sc, c}} {
		_, err := p[0].Write([]byte(msg))
		require.NoError(t, err, msg)
		buf := make([]byte, len(msg))
		p[1].SetReadDeadline(time.Now().Add(quick))
		_, err = io.ReadFull(p[1], buf)
		require.NoError(t, err, msg)
		require.Equal(t, msg, string(buf))
		p[1].SetReadDeadline(time.Time{})
	}
}

// A resume sends from the last offset the reader acknowledged, before it
// hears how far the reader got: everything read but not yet acknowledged
// crosses the path twice. A steady stream must therefore be acknowledged
// every few milliseconds, not only each ackEvery bytes (1 MiB here), or a
// 20 Mbit/s flow resends up to 0.4 s of data after every server move.
func TestResumeResendsLittleOfASteadyStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, natStormLink, Config{})
		const moves = 4
		// Writes return once buffered, so the moves follow the clock, not
		// the writer's progress: one every 0.6 s of the 3.4 s transfer.
		moved := make(chan error, 1)
		go func() {
			for range moves {
				time.Sleep(600 * time.Millisecond)
				if err := b.path.MoveServer(); err != nil {
					moved <- err
					return
				}
				if err := b.server.SetAdvertiseAddr(t.Context(), b.path.ServerAddr()); err != nil {
					moved <- err
					return
				}
			}
			moved <- nil
		}()
		transfer(t, b.c, b.sc, 8<<20, nil)
		require.NoError(t, <-moved)
		b.requireNoLoss(t)
		st := b.sc.Stats()
		require.Equal(t, moves, st.Resumes)
		// Each resume resends what was read in the last ackDelay and in
		// the Ack's trip back (10 ms, plus the queue): 2.5 MB/s × 20 ms is
		// 50 KB.
		perResume := st.BytesRedundant / moves
		t.Logf("%d bytes resent and discarded per resume", perResume)
		// Some always are: the Acks in flight at each move never arrive.
		require.NotZero(t, st.BytesRedundant, "the stat counts the bytes discarded")
		require.Less(t, perResume, uint64(200<<10))
	})
}
