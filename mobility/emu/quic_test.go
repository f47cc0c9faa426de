package emu

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

func tlsConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     []string{"server.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}},
		NextProtos:   []string{"emu-test"},
	}
	client = &tls.Config{RootCAs: pool, ServerName: "server.test", NextProtos: []string{"emu-test"}}
	return server, client
}

// TestQUICThroughMotion runs quic-go over the in-memory network, inside a
// synctest bubble, across a lossy, rate-limited path that blacks out for
// 20 s (a tunnel, shorter than the idle timeout) and then hands over to a
// new client address. The server checks every byte.
func TestQUICThroughMotion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link := LinkConfig{Delay: 30 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.01, Rate: 20_000_000}
		b := newBed(t, 1, PathConfig{Up: link, Down: link})
		srvTLS, cliTLS := tlsConfigs(t)
		conf := &quic.Config{MaxIdleTimeout: 40 * time.Second, KeepAlivePeriod: 5 * time.Second}

		srvTr := &quic.Transport{Conn: b.srv}
		defer srvTr.Close()
		ln, err := srvTr.Listen(srvTLS, conf)
		require.NoError(t, err)
		defer ln.Close()

		data := make([]byte, 4<<20)
		_, _ = rand.Read(data)
		want := sha256.Sum256(data)

		serverErr := make(chan error, 1)
		go func() {
			serverErr <- func() error {
				conn, err := ln.Accept(t.Context())
				if err != nil {
					return err
				}
				str, err := conn.AcceptStream(t.Context())
				if err != nil {
					return err
				}
				h := sha256.New()
				if _, err := io.Copy(h, str); err != nil {
					return err
				}
				if _, err := str.Write(h.Sum(nil)); err != nil {
					return err
				}
				return str.Close()
			}()
		}()

		cliTr := &quic.Transport{Conn: b.cli}
		defer cliTr.Close()
		start := time.Now()
		conn, err := cliTr.Dial(t.Context(), net.UDPAddrFromAddrPort(b.path.ServerAddr()), cliTLS, conf)
		require.NoError(t, err)
		defer conn.CloseWithError(0, "")
		str, err := conn.OpenStreamSync(t.Context())
		require.NoError(t, err)

		time.AfterFunc(500*time.Millisecond, func() { b.path.Blackout(20 * time.Second) })
		time.AfterFunc(22*time.Second, func() { b.path.Handover(150 * time.Millisecond) })
		_, err = str.Write(data)
		require.NoError(t, err)
		require.NoError(t, str.Close())
		got, err := io.ReadAll(str)
		require.NoError(t, err)
		require.Equal(t, want[:], got)
		require.NoError(t, <-serverErr)

		elapsed := time.Since(start)
		require.Greater(t, elapsed, 20*time.Second, "the transfer spanned the blackout")
		require.Len(t, b.kinds(EventMapping), 2, "the server saw the client at a second address")
		t.Logf("4 MiB in %v of virtual time; %d datagrams dropped up, %d down",
			elapsed, sum(b.path.Link(Up).Stats().Dropped), sum(b.path.Link(Down).Stats().Dropped))
	})
}

func sum(m map[DropReason]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

// TestQUICOverRelay runs quic-go over real sockets through the relay,
// which on Linux forwards its GSO runs whole, across a handover.
func TestQUICOverRelay(t *testing.T) {
	srvTLS, cliTLS := tlsConfigs(t)
	srvConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	srvTr := &quic.Transport{Conn: srvConn}
	defer srvTr.Close()
	ln, err := srvTr.Listen(srvTLS, nil)
	require.NoError(t, err)
	defer ln.Close()

	var mappings atomic.Int32
	r := newRelay(t, RelayConfig{Server: localAddr(srvConn), PathConfig: PathConfig{
		Up:   LinkConfig{Delay: time.Millisecond},
		Down: LinkConfig{Delay: time.Millisecond},
		OnEvent: func(e Event) {
			if e.Kind == EventMapping {
				mappings.Add(1)
			}
		},
	}})

	data := make([]byte, 8<<20)
	_, _ = rand.Read(data)
	want := sha256.Sum256(data)
	serverErr := make(chan error, 1)
	go func() {
		serverErr <- func() error {
			conn, err := ln.Accept(t.Context())
			if err != nil {
				return err
			}
			str, err := conn.AcceptStream(t.Context())
			if err != nil {
				return err
			}
			h := sha256.New()
			if _, err := io.Copy(h, str); err != nil {
				return err
			}
			_, err = str.Write(h.Sum(nil))
			return errors.Join(err, str.Close())
		}()
	}()

	cliConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	cliTr := &quic.Transport{Conn: cliConn}
	defer cliTr.Close()
	conn, err := cliTr.Dial(t.Context(), net.UDPAddrFromAddrPort(r.ServerAddr()), cliTLS, nil)
	require.NoError(t, err)
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(t.Context())
	require.NoError(t, err)
	_, err = str.Write(data[:len(data)/2])
	require.NoError(t, err)
	r.Handover(20 * time.Millisecond)
	_, err = str.Write(data[len(data)/2:])
	require.NoError(t, err)
	require.NoError(t, str.Close())
	got, err := io.ReadAll(str)
	require.NoError(t, err)
	require.Equal(t, want[:], got)
	require.NoError(t, <-serverErr)
	require.Equal(t, int32(2), mappings.Load(), "the server saw the client at a new address")
}
