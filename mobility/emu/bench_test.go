package emu

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRelay measures what an unshaped relay costs a benchmark that
// runs through it: its throughput on loopback, and the latency it adds to
// a round trip compared with direct UDP.
//
//	go test -run '^$' -bench Relay ./mobility/emu
func BenchmarkRelay(b *testing.B) {
	for _, size := range []int{1400, 8192} {
		b.Run("throughput/"+strconv.Itoa(size)+"B", func(b *testing.B) { benchThroughput(b, size, 1) })
	}
	// As quic-go sends on Linux: runs of datagrams in one system call (GSO).
	b.Run("throughput/1400B-gso", func(b *testing.B) {
		if oobSize == 0 {
			b.Skip("no GSO here")
		}
		benchThroughput(b, 1400, 32)
	})
	b.Run("latency", benchLatency)
}

// sink counts what reaches it, and wakes the sender every 64 datagrams.
type sink struct {
	conn    *net.UDPConn
	packets atomic.Int64
	bytes   atomic.Int64
	last    atomic.Int64 // UnixNano of the last arrival
	wake    chan struct{}
	wg      sync.WaitGroup
}

func newSink(b *testing.B) *sink {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	_ = c.SetReadBuffer(8 << 20)
	enableGRO(c)
	s := &sink{conn: c, wake: make(chan struct{}, 1)}
	s.wg.Go(func() {
		buf, oob := make([]byte, 65536), make([]byte, oobSize)
		for {
			n, oobn, _, _, err := c.ReadMsgUDPAddrPort(buf, oob)
			if err != nil {
				return
			}
			seg := groSegment(oob[:oobn])
			if seg == 0 {
				seg = n
			}
			s.bytes.Add(int64(n))
			s.last.Store(time.Now().UnixNano())
			before := s.packets.Load()
			after := s.packets.Add(int64((n + seg - 1) / seg))
			if before/64 != after/64 {
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
		}
	})
	return s
}

func (s *sink) close() { s.conn.Close(); s.wg.Wait() }

// benchThroughput sends b.N datagrams of size bytes through the relay,
// run datagrams per system call.
func benchThroughput(b *testing.B, size, run int) {
	srv := newSink(b)
	defer srv.close()
	r, err := NewRelay(RelayConfig{Server: localAddr(srv.conn)})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	cli, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.ServerAddr()))
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	_ = cli.SetWriteBuffer(8 << 20)

	// A window of datagrams in flight keeps the socket buffers from
	// overflowing, so that what is measured is what the relay carries.
	window := int64(max(64, (1<<20)/size))
	msg, oob := make([]byte, size*run), make([]byte, oobSize)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for sent := int64(0); sent < int64(b.N); {
		for sent-srv.packets.Load() >= window {
			select {
			case <-srv.wake:
			case <-time.After(100 * time.Millisecond): // a datagram was lost
				window += 64
			}
		}
		n := min(int64(run), int64(b.N)-sent)
		var err error
		if n > 1 {
			_, _, err = cli.WriteMsgUDPAddrPort(msg[:n*int64(size)], gsoOOB(oob, size), netip.AddrPort{})
		} else {
			_, err = cli.Write(msg[:size])
		}
		if err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	deadline := time.Now().Add(time.Second)
	for srv.packets.Load() < int64(b.N) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	elapsed := time.Unix(0, srv.last.Load()).Sub(start)
	got := srv.bytes.Load()
	b.ReportMetric(float64(got)*8/elapsed.Seconds()/1e9, "Gbit/s")
	b.ReportMetric(100*float64(srv.packets.Load())/float64(b.N), "delivered-%")
}

func benchLatency(b *testing.B) {
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer echo.Close()
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteToUDPAddrPort(buf[:n], from)
		}
	})
	r, err := NewRelay(RelayConfig{Server: localAddr(echo)})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	cli, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()

	msg, buf := make([]byte, 1200), make([]byte, 2048)
	ping := func(to netip.AddrPort) time.Duration {
		start := time.Now()
		if _, err := cli.WriteToUDPAddrPort(msg, to); err != nil {
			b.Fatal(err)
		}
		_ = cli.SetReadDeadline(start.Add(time.Second))
		if _, _, err := cli.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	ping(r.ServerAddr()) // opens the mapping
	direct := make([]time.Duration, 0, b.N)
	relayed := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		// Interleaved, so that both see the same machine.
		direct = append(direct, ping(localAddr(echo)))
		relayed = append(relayed, ping(r.ServerAddr()))
	}
	b.StopTimer()
	d, rl := medianOf(direct), medianOf(relayed)
	b.ReportMetric(float64(d)/1e3, "µs/rtt-direct")
	b.ReportMetric(float64(rl)/1e3, "µs/rtt-relayed")
	b.ReportMetric(float64(rl-d)/2/1e3, "µs-added/way")
}

func medianOf(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// BenchmarkLinkAdmit is the cost of the link model per datagram.
func BenchmarkLinkAdmit(b *testing.B) {
	l := NewLink(LinkConfig{Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.01,
		Rate: 100_000_000, Queue: 1 << 30}, 1)
	now := time.Now()
	b.ReportAllocs()
	for i := range b.N {
		l.Admit(now.Add(time.Duration(i)*100*time.Microsecond), 1200)
	}
}
