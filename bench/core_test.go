package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
	"github.com/stretchr/testify/require"
)

// These benchmarks measure roam against raw quic-go on loopback, in the same
// run and interleaved, so that machine noise hits both alike. Each reports
// its own figures and the ratio to the baseline; read the ratio.

const chunk = 8 << 20 // bytes per throughput round

// sink reads a stream to the end, reporting every `chunk` bytes received.
func sink(r io.Reader, got chan<- struct{}) {
	buf := make([]byte, 64<<10)
	n := 0
	for {
		m, err := r.Read(buf)
		n += m
		for n >= chunk {
			n -= chunk
			got <- struct{}{}
		}
		if err != nil {
			close(got)
			return
		}
	}
}

// timedRound writes one chunk and waits until the peer has read all of it.
func timedRound(b *testing.B, w io.Writer, got <-chan struct{}, payload []byte) time.Duration {
	start := time.Now()
	for off := 0; off < chunk; off += len(payload) {
		if _, err := w.Write(payload); err != nil {
			b.Fatal(err)
		}
	}
	if _, ok := <-got; !ok {
		b.Fatal("sink ended early")
	}
	return time.Since(start)
}

type roamPair struct {
	server, client *sal.Host
	l              *sal.Listener
}

func newRoamPair(tb testing.TB) *roamPair {
	mem := resolve.NewMemory()
	server, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	require.NoError(tb, err)
	client, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	require.NoError(tb, err)
	l, err := server.Listen(context.Background(), "bench.demo")
	require.NoError(tb, err)
	p := &roamPair{server, client, l}
	tb.Cleanup(func() { client.Close(); server.Close() })
	return p
}

type quicPair struct {
	ln       *quic.Listener
	serverTr *quic.Transport
	clientTr *quic.Transport
	tlsConf  *tls.Config
	addr     net.Addr
	close    func() // closes everything; also done at the test's cleanup
}

func newQUICPair(tb testing.TB, mutual bool) *quicPair { return newQUICPairConf(tb, mutual, nil) }

// newQUICPairConf is newQUICPair with conf for the server's connections.
func newQUICPairConf(tb testing.TB, mutual bool, conf *quic.Config) *quicPair {
	serverTLS, clientTLS := benchTLS(tb, mutual)
	sc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(tb, err)
	cc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(tb, err)
	p := &quicPair{serverTr: &quic.Transport{Conn: sc}, clientTr: &quic.Transport{Conn: cc}, tlsConf: clientTLS}
	p.ln, err = p.serverTr.Listen(serverTLS, conf)
	require.NoError(tb, err)
	p.addr = sc.LocalAddr()
	p.close = sync.OnceFunc(func() {
		p.ln.Close()
		p.clientTr.Close()
		p.serverTr.Close()
		sc.Close()
		cc.Close()
	})
	tb.Cleanup(p.close)
	return p
}

func BenchmarkThroughput(b *testing.B) {
	ctx := context.Background()
	payload := make([]byte, 32<<10)

	rp := newRoamPair(b)
	roamGot := make(chan struct{}, 1)
	go func() {
		c, err := rp.l.AcceptContext(ctx)
		if err == nil {
			sink(c, roamGot)
		}
	}()
	rc, err := rp.client.Dial(ctx, "bench.demo")
	require.NoError(b, err)
	defer rc.Close()

	qp := newQUICPair(b, false)
	quicGot := make(chan struct{}, 1)
	go func() {
		c, err := qp.ln.Accept(ctx)
		if err != nil {
			return
		}
		s, err := c.AcceptStream(ctx)
		if err == nil {
			sink(s, quicGot)
		}
	}()
	qc, err := qp.clientTr.Dial(ctx, qp.addr, qp.tlsConf, nil)
	require.NoError(b, err)
	qs, err := qc.OpenStreamSync(ctx)
	require.NoError(b, err)
	defer qs.Close()

	// One warm-up round each lets both flow-control windows grow.
	timedRound(b, rc, roamGot, payload)
	timedRound(b, qs, quicGot, payload)

	// Time and the process's CPU time (both ends, user and system) per
	// round: on loopback both are CPU-bound, so CPU per MB is the figure
	// that carries over to a real link.
	var roamT, quicT, roamCPU, quicCPU time.Duration
	round := func(w io.Writer, got <-chan struct{}, t, cpu *time.Duration) {
		c0 := cpuTime()
		*t += timedRound(b, w, got, payload)
		*cpu += cpuTime() - c0
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 { // alternate who goes first
			round(rc, roamGot, &roamT, &roamCPU)
			round(qs, quicGot, &quicT, &quicCPU)
		} else {
			round(qs, quicGot, &quicT, &quicCPU)
			round(rc, roamGot, &roamT, &roamCPU)
		}
	}
	b.StopTimer()
	mb := float64(chunk) * float64(b.N) / 1e6
	b.ReportMetric(mb/roamT.Seconds(), "roam-MB/s")
	b.ReportMetric(mb/quicT.Seconds(), "quic-MB/s")
	b.ReportMetric(quicT.Seconds()/roamT.Seconds(), "ratio")
	b.ReportMetric(float64(roamCPU.Microseconds())/1e3/mb, "roam-cpu-ms/MB")
	b.ReportMetric(float64(quicCPU.Microseconds())/1e3/mb, "quic-cpu-ms/MB")
	b.ReportMetric(float64(roamCPU)/float64(quicCPU), "cpu-ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkFirstDial compares the first flow to a service whose endpoint is
// cached with a raw quic-go dial, in two forms: the common one where only
// the server has a certificate, and mutual TLS, which is what roam does (the
// dialer proves its key, so the listener knows who dials). The difference
// between the two baselines is the price of that client authentication.
func BenchmarkFirstDial(b *testing.B) {
	ctx := context.Background()
	rp := newRoamPair(b)
	go func() {
		for {
			c, err := rp.l.AcceptContext(ctx)
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	qp := newQUICPair(b, false)
	mp := newQUICPair(b, true)
	for _, p := range []*quicPair{qp, mp} {
		go func() {
			for {
				if _, err := p.ln.Accept(ctx); err != nil {
					return
				}
			}
		}()
	}

	var roamT, quicT, mtlsT time.Duration
	roamDial := func() {
		client, err := sal.NewHost(sal.Config{Resolver: rp.client.Resolver(), ListenAddr: "127.0.0.1:0"})
		require.NoError(b, err)
		_, err = client.Resolver().Resolve(ctx, "bench.demo") // cached before the clock starts
		require.NoError(b, err)
		start := time.Now()
		c, err := client.Dial(ctx, "bench.demo")
		roamT += time.Since(start)
		require.NoError(b, err)
		c.Close()
		client.Close()
	}
	quicDial := func(p *quicPair, total *time.Duration) {
		uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(b, err)
		tr := &quic.Transport{Conn: uc}
		start := time.Now()
		c, err := tr.Dial(ctx, p.addr, p.tlsConf, nil)
		*total += time.Since(start)
		require.NoError(b, err)
		c.CloseWithError(0, "")
		tr.Close()
		uc.Close()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Rotate the order so that no system always runs first.
		for j := range 3 {
			switch (i + j) % 3 {
			case 0:
				roamDial()
			case 1:
				quicDial(qp, &quicT)
			case 2:
				quicDial(mp, &mtlsT)
			}
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(roamT.Microseconds())/n, "roam-µs")
	b.ReportMetric(float64(quicT.Microseconds())/n, "quic-µs")
	b.ReportMetric(float64(mtlsT.Microseconds())/n, "quic-mtls-µs")
	b.ReportMetric(roamT.Seconds()/quicT.Seconds(), "ratio")
	b.ReportMetric(roamT.Seconds()/mtlsT.Seconds(), "ratio-mtls")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkFurtherFlow measures a further flow to a peer that already has a
// connection: one SAL header round trip. It reports the time in RTTs of
// the connection (quic-go's smoothed RTT estimate).
func BenchmarkFurtherFlow(b *testing.B) {
	ctx := context.Background()
	rp := newRoamPair(b)
	go func() {
		for {
			c, err := rp.l.AcceptContext(ctx)
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	first, err := rp.client.Dial(ctx, "bench.demo")
	require.NoError(b, err)
	defer first.Close()

	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		c, err := rp.client.Dial(ctx, "bench.demo")
		total += time.Since(start)
		require.NoError(b, err)
		c.Close()
	}
	b.StopTimer()
	per := total / time.Duration(b.N)
	rtt := first.Stats().SmoothedRTT
	b.ReportMetric(float64(per.Microseconds()), "µs/flow")
	if rtt > 0 {
		b.ReportMetric(float64(per)/float64(rtt), "RTTs")
	}
}
