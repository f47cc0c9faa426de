// A bare quic-go program with the handshake roam does (TLS 1.3 with a
// certificate on each side) and one echoed stream: the baseline of
// TestLeanImports.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"

	"github.com/quic-go/quic-go"
)

func cert() tls.Certificate {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
}

func main() {
	ctx := context.Background()
	srv := &tls.Config{Certificates: []tls.Certificate{cert()}, NextProtos: []string{"x"}, ClientAuth: tls.RequireAnyClientCert}
	ln, _ := quic.ListenAddr("127.0.0.1:0", srv, nil)
	go func() {
		c, _ := ln.Accept(ctx)
		s, _ := c.AcceptStream(ctx)
		io.Copy(s, s)
	}()
	cli := &tls.Config{Certificates: []tls.Certificate{cert()}, NextProtos: []string{"x"}, InsecureSkipVerify: true}
	c, _ := quic.DialAddr(ctx, ln.Addr().String(), cli, nil)
	s, _ := c.OpenStreamSync(ctx)
	s.Write([]byte("hello"))
}
