package sal

// Review tests on the in-memory network, in virtual time. Each
// TestReview_* demonstrates a bug and is expected to FAIL until it is fixed.

import (
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

// rvEmu is a server Host behind a 10 ms path and a client Host.
type rvEmu struct {
	nw                   *emu.Network
	path                 *emu.Path
	server, client       *Host
	l                    *Listener
	serverLog, clientLog eventLog
}

func newRVEmu(t *testing.T, service string) *rvEmu {
	b := &rvEmu{nw: emu.NewNetwork(1)}
	t.Cleanup(func() { b.nw.Close() })
	mem := resolve.NewMemory()
	serverAddr := netip.MustParseAddrPort("10.0.0.1:443")
	link := emu.LinkConfig{Delay: 10 * time.Millisecond}
	var err error
	b.path, err = b.nw.NewPath(serverAddr, emu.PathConfig{Up: link, Down: link})
	require.NoError(t, err)
	b.server = newHost(t, Config{Resolver: mem, ListenAddr: serverAddr.String(), ListenPacket: b.nw.ListenPacket,
		AdvertiseAddr: b.path.ServerAddr(), OnEvent: b.serverLog.record, Logger: rvLogger("S")})
	b.client = newHost(t, Config{Resolver: mem, ListenAddr: "10.0.1.1:0", ListenPacket: b.nw.ListenPacket,
		OnEvent: b.clientLog.record, Logger: rvLogger("C")})
	b.l, err = b.server.Listen(t.Context(), service)
	require.NoError(t, err)
	return b
}

// TestReview_ReadDeadlineKillsOptimisticReply: install gives a carrier's
// stream the application's read deadline (Conn.install) and SetReadDeadline
// applies to c.car.s (Conn.SetReadDeadline) even while the stream's SAL Reply has
// not been read. A read deadline that passes before the Reply arrives makes
// awaitReply (dial.go) fail with "deadline exceeded", which
// classify calls a carrier failure: a healthy flow is suspended and
// resumed. The same holds for resumeAt's Reply (resumeAt). Worse,
// between close(car.ready) and the suspension a concurrent Read reads the
// unread Reply and replayed bytes as data (Conn.Read: a closed ready with
// car.err set is not checked), which corrupts readOff; that is the
// "resume refused: read offset out of range" seen in nettest's
// ConcurrentMethods under load.
func TestReview_ReadDeadlineKillsOptimisticReply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRVEmu(t, "rd.demo")
		acc := accept(t, b.l)
		c, err := b.client.Dial(t.Context(), "rd.demo") // fresh connection: optimistic
		require.NoError(t, err)
		sc := <-acc
		defer c.Close()
		defer sc.Close()
		// A poll with a short deadline, before the Reply (one RTT away) is in.
		require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Millisecond)))
		_, err = c.Read(make([]byte, 1))
		require.True(t, isTimeoutErr(err), "%v", err)
		time.Sleep(time.Second)
		synctest.Wait()
		require.Zero(t, b.clientLog.count(EventSuspended), "a read deadline suspended a healthy flow")
		require.Zero(t, c.Stats().Resumes, "a read deadline made a healthy flow resume")
	})
}

// TestReview_DialDuringRebindFails: dialPeer picks h.cur before the
// handshake (dialPeer: t := h.cur) but records the transport in p.transports only
// after it (p.transports = ...), and Rebind migrates only peers whose conn is set
// (Rebind: p.sess != nil, read under h.mu while dialPeer writes p.sess.qc without it:
// a data race). A Rebind during a handshake therefore neither migrates the
// new connection nor keeps its socket: closeUnusedLocked closes the old
// transport under the handshake, and the Dial fails.
func TestReview_DialDuringRebindFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newRVEmu(t, "rb.demo")
		acc := accept(t, b.l)
		type result struct {
			c   *Conn
			err error
		}
		done := make(chan result, 1)
		go func() {
			c, err := b.client.Dial(t.Context(), "rb.demo")
			done <- result{c, err}
		}()
		time.Sleep(5 * time.Millisecond) // the handshake is in flight (RTT 20 ms)
		require.NoError(t, b.client.Rebind(t.Context(), "10.0.1.2:0"))
		r := <-done
		require.NoError(t, r.err, "a Dial must survive a concurrent Rebind")
		defer r.c.Close()
		sc := <-acc
		require.NotNil(t, sc)
		defer sc.Close()
	})
}
