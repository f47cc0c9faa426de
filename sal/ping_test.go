package sal

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

func endpointOf(h *Host) resolve.Endpoint {
	return resolve.Endpoint{Addr: h.LocalAddr(), Key: h.Key()}
}

func TestPing(t *testing.T) {
	server, client, l := pair(t, "ping.demo")
	ep := endpointOf(server)

	rtt, err := client.Ping(testCtx(t), "ping.demo", ep)
	require.NoError(t, err)
	require.Positive(t, rtt)
	require.NoError(t, client.Probe(testCtx(t), "PING.demo", ep))
	// Self-certifying IDs name the same listener.
	id, err := server.ServiceID("ping.demo")
	require.NoError(t, err)
	require.NoError(t, client.Probe(testCtx(t), id.String(), resolve.Endpoint{Addr: server.LocalAddr()}))

	// A ping rides the connection flows use, and creates no flow.
	c := pingPong(t, client, l, "ping.demo")
	defer c.Close()
	require.NoError(t, client.Probe(testCtx(t), "ping.demo", ep))
	client.mu.Lock()
	require.Len(t, client.peers, 1)
	client.mu.Unlock()
	server.mu.Lock()
	require.LessOrEqual(t, len(server.flows), 1, "only the dialed flow")
	server.mu.Unlock()
	select {
	case c := <-l.queue:
		t.Fatalf("a ping was delivered as a flow: %v", c.FlowID())
	default:
	}
}

func TestPingNoListener(t *testing.T) {
	server, client, _ := pair(t, "ping.demo")
	ep := endpointOf(server)
	// No connection yet: the handshake refuses the service.
	_, err := client.Ping(testCtx(t), "other.demo", ep)
	require.ErrorIs(t, err, ErrNoListener)
	var op *OpError
	require.ErrorAs(t, err, &op)
	require.Equal(t, "ping", op.Op)
	require.Equal(t, ep.Addr, op.Endpoint)

	// On an open connection, the peer's Reply says so.
	require.NoError(t, client.Probe(testCtx(t), "ping.demo", ep))
	err = client.Probe(testCtx(t), "other.demo", ep)
	require.ErrorIs(t, err, ErrNoListener)
	// A self-certifying ID with another key is not served there either.
	other, err := NewServiceID("ping.demo", client.Key())
	require.NoError(t, err)
	err = client.Probe(testCtx(t), other.String(), resolve.Endpoint{Addr: server.LocalAddr()})
	require.ErrorIs(t, err, ErrKeyMismatch, "the ID's pin is checked before asking")

	// A closed Listener no longer answers.
	l2, err := server.Listen(testCtx(t), "late.demo")
	require.NoError(t, err)
	require.NoError(t, client.Probe(testCtx(t), "late.demo", ep))
	require.NoError(t, l2.Close())
	require.ErrorIs(t, client.Probe(testCtx(t), "late.demo", ep), ErrNoListener)
}

func TestPingWrongKey(t *testing.T) {
	server, client, _ := pair(t, "ping.demo")
	ep := endpointOf(server)
	ep.Key = client.Key() // a pin the server does not hold
	_, err := client.Ping(testCtx(t), "ping.demo", ep)
	require.ErrorIs(t, err, ErrKeyMismatch)

	strict := newHost(t, Config{Resolver: resolve.NewMemory(), RequireAuthentication: true})
	_, err = strict.Ping(testCtx(t), "ping.demo", resolve.Endpoint{Addr: server.LocalAddr()})
	require.ErrorIs(t, err, ErrUnauthenticated)

	_, err = client.Ping(testCtx(t), "bad_name", endpointOf(server))
	require.ErrorIs(t, err, ErrInvalidServiceID)
}

// A peer that shut down or crashed makes a ping fail within its context,
// whether or not a connection to it was open.
func TestPingAfterPeerGone(t *testing.T) {
	for _, tc := range []struct {
		name      string
		connected bool
		crash     bool
	}{
		{"closed, no connection", false, false},
		{"closed, connected", true, false},
		{"crashed, connected", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, client, _ := pair(t, "ping.demo")
			ep := endpointOf(server)
			if tc.connected {
				require.NoError(t, client.Probe(testCtx(t), "ping.demo", ep))
			}
			if tc.crash {
				// The socket vanishes with no goodbye to the peer.
				server.mu.Lock()
				pc := server.cur.pc
				server.mu.Unlock()
				require.NoError(t, pc.Close())
			} else {
				require.NoError(t, server.Close())
			}
			const timeout = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			_, err := client.Ping(ctx, "ping.demo", ep)
			require.ErrorIs(t, err, ErrUnreachable)
			require.Less(t, time.Since(start), timeout+quick/5, "a ping must end with its context")
			if !tc.connected || tc.crash {
				require.ErrorIs(t, err, context.DeadlineExceeded)
				require.True(t, isTimeoutErr(err))
			}
		})
	}
}

func TestPingClosedHost(t *testing.T) {
	server, client, _ := pair(t, "ping.demo")
	require.NoError(t, client.Close())
	err := client.Probe(testCtx(t), "ping.demo", endpointOf(server))
	require.ErrorIs(t, err, net.ErrClosed)
}

// A malformed Ping is answered "bad request" and delivers nothing.
func TestMalformedPingRefused(t *testing.T) {
	server, client, l := pair(t, "victim.demo")
	id, err := newIdentity(nil)
	require.NoError(t, err)
	tr := &quic.Transport{Conn: mustListenUDP(t)}
	defer tr.Close()
	qc, err := tr.Dial(testCtx(t), net.UDPAddrFromAddrPort(server.LocalAddr()), id.clientTLS(""), nil)
	require.NoError(t, err)
	defer qc.CloseWithError(0, "")

	for _, garbage := range [][]byte{
		{1, 3, 3, 'a', '_', 'b', 0, 0},                     // bad service ID
		{1, 3, 0, 0, 0},                                    // empty service
		{1, 3, 3, 'a', '.', 'b', 0, 3, 0, 5, 0},            // bad TLV
		{1, 3, 11, 'v', 'i', 'c', 't', 'i', 'm', '.', 'd'}, // truncated, then FIN
	} {
		s, err := qc.OpenStreamSync(testCtx(t))
		require.NoError(t, err)
		_, err = s.Write(garbage)
		require.NoError(t, err)
		s.Close()
		s.SetReadDeadline(time.Now().Add(quick))
		buf := make([]byte, 64)
		n, _ := s.Read(buf)
		if garbage[2] == 11 {
			require.Zero(t, n, "a truncated header gets no answer, only a reset")
			continue
		}
		require.GreaterOrEqual(t, n, 3)
		require.Equal(t, byte(3), buf[2], "bad request")
	}
	// An honest ping over the same raw connection is answered OK.
	s, err := qc.OpenStreamSync(testCtx(t))
	require.NoError(t, err)
	_, err = s.Write([]byte{1, 3, 11, 'v', 'i', 'c', 't', 'i', 'm', '.', 'd', 'e', 'm', 'o', 0, 0})
	require.NoError(t, err)
	s.SetReadDeadline(time.Now().Add(quick))
	buf := make([]byte, 64)
	n, _ := s.Read(buf)
	require.GreaterOrEqual(t, n, 3)
	require.Equal(t, []byte{1, 0x81, 0}, buf[:3])

	pingPong(t, client, l, "victim.demo")
	select {
	case c := <-l.queue:
		t.Fatalf("a ping was delivered as a flow: %v", c.FlowID())
	default:
	}
}

// A peer that crashed and came back at the same address answers the next
// ping, though the old connection to it was never closed.
func TestPingSeesRestartedPeer(t *testing.T) {
	server, client, _ := pair(t, "ping.demo")
	ep := endpointOf(server)
	require.NoError(t, client.Probe(testCtx(t), "ping.demo", ep))
	server.mu.Lock()
	pc := server.cur.pc
	server.mu.Unlock()
	require.NoError(t, pc.Close()) // crash: no goodbye

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, client.Probe(ctx, "ping.demo", ep), ErrUnreachable)

	again := newHost(t, Config{Resolver: resolve.NewMemory(), ListenAddr: ep.Addr.String(), Key: server.id.key})
	_, err := again.Listen(testCtx(t), "ping.demo")
	require.NoError(t, err)
	ctx, cancel = context.WithTimeout(context.Background(), quick)
	defer cancel()
	require.NoError(t, client.Probe(ctx, "ping.demo", ep))
}
