package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"
)

// An attacker speaks QUIC and as much of roam's SAL as it likes. It
// encodes the few bytes it needs itself, as a hostile client would.

// alpn is roam's protocol name in the TLS handshake.
const alpn = "roam/1"

// rawTLS is a client TLS config with a fresh self-signed key: every call
// is a new peer, as keys cost an attacker nothing.
func rawTLS() (*tls.Config, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}},
		NextProtos:         []string{alpn},
		ServerName:         victimService,
		InsecureSkipVerify: true,
	}, nil
}

// rawDial connects to the victim as a new peer. Closing the transport
// ends the connection.
func rawDial(ctx context.Context, victim netip.AddrPort, conf *quic.Config) (*quic.Transport, *quic.Conn, error) {
	tlsConf, err := rawTLS()
	if err != nil {
		return nil, nil, err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	tr := &quic.Transport{Conn: pc}
	qc, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(victim), tlsConf, conf)
	if err != nil {
		tr.Close()
		pc.Close()
		return nil, nil, err
	}
	return tr, qc, nil
}

// openHeader is a SAL Open for service: version, type, flow ID, service,
// and no extensions (so no resume secret: the flow cannot be resumed).
func openHeader(service string) []byte {
	var id [8]byte
	rand.Read(id[:])
	b := []byte{1, 0x01}
	b = append(b, id[:]...)
	b = append(b, byte(len(service)))
	b = append(b, service...)
	return append(b, 0, 0)
}

// readReplyStatus reads a SAL Reply and returns its status.
func readReplyStatus(r io.Reader) (byte, error) {
	var fixed [5]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return 0, err
	}
	if ext := binary.BigEndian.Uint16(fixed[3:]); ext > 0 {
		if _, err := io.CopyN(io.Discard, r, int64(ext)); err != nil {
			return 0, err
		}
	}
	return fixed[2], nil
}
