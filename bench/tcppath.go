package main

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/mobility/trace"
)

// tcpLink is the TCP path's model of a link, what emu.Link is to the
// relay: a one-way delay with jitter and a bottleneck rate per direction,
// and blackouts. A proxy relays bytes, not segments, so it cannot drop
// one: a full bottleneck queue stops the proxy reading (TCP's flow
// control then slows the sender, without the loss that would halve its
// window), and random loss is not modelled at all. Every simplification
// is in TCP's favour: this is TCP at its best.
type tcpLink struct {
	mu     sync.Mutex
	delay  time.Duration // one way
	jitter time.Duration // one way: the delay varies within ±jitter
	rate   int64         // bit/s per direction; 0 is unlimited
	dark   time.Time     // the end of the current blackout
	busy   [2]time.Time  // per direction: when the bottleneck has sent what it holds
	last   [2]time.Time  // per direction: the latest arrival handed out, to keep order
	rng    *rand.Rand
}

func newTCPLink(l trace.Link, seed uint64) *tcpLink {
	t := &tcpLink{rng: rand.New(rand.NewPCG(seed, 0x7463702d6c696e6b))} // "tcp-link"
	t.set(l)
	return t
}

// set gives the link a trace's path-wide figures, as emu.LinkConfigOf
// does for the relay: half the RTT and half the jitter each way.
func (l *tcpLink) set(lk trace.Link) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.delay, l.jitter, l.rate = lk.RTT/2, lk.Jitter/2, lk.Rate
}

func (l *tcpLink) oneWay() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.delay
}

// blackout stops the path for d in both directions. With backoff, the
// path comes back for the connection only at its first retransmission
// after d, as for a TCP sender whose timer doubles from one RTO (the RTT
// plus Linux's 200 ms minimum) while nothing gets through; without it
// (a handover, after which the client reconnects anyway), after d.
func (l *tcpLink) blackout(d time.Duration, backoff bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if backoff {
		rto := 2*l.delay + 200*time.Millisecond
		t := rto
		for t < d {
			rto = min(2*rto, 120*time.Second)
			t += rto
		}
		d = t
	}
	if end := time.Now().Add(d); end.After(l.dark) {
		l.dark = end
	}
}

// darkUntil returns the end of the current blackout, in the past if none.
func (l *tcpLink) darkUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dark
}

// admit takes n bytes read at now for direction dir and returns when
// they arrive at the other end, and until when the reader must wait
// before it reads more: while the bottleneck's queue (100 ms at the rate,
// at least 64 KiB, as emu's default) is full.
func (l *tcpLink) admit(dir emu.Dir, now time.Time, n int) (at, readAgain time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	exit := now
	if exit.Before(l.dark) {
		exit = l.dark
	}
	if l.rate > 0 {
		if l.busy[dir].After(exit) {
			exit = l.busy[dir]
		}
		exit = exit.Add(time.Duration(int64(n) * 8e9 / l.rate))
		l.busy[dir] = exit
		queue := max(int64(64<<10), l.rate/8/10)
		readAgain = exit.Add(-time.Duration(queue * 8e9 / l.rate))
	}
	delay := l.delay
	if l.jitter > 0 {
		delay = max(delay+time.Duration((l.rng.Float64()*2-1)*float64(l.jitter)), 0)
	}
	at = exit.Add(delay)
	if at.Before(l.last[dir]) {
		at = l.last[dir]
	}
	l.last[dir] = at
	return at, readAgain
}

// tcpPath is a TCP proxy in front of a TCP server that emulates a path
// (tcpLink) and the handshake. A proxy accepts a connection at once,
// where a real server sees the connection 1.5 RTT after the client's
// connect began (SYN, SYN-ACK, ACK) and sees no data before then; so the
// proxy holds the client's first bytes until 1.5 RTT after accepting. A
// real client's connect returns 1 RTT after it began, and here at once;
// but nothing it sends arrives sooner than it would, so every answer
// reaches it when it would. What this leaves out is TCP's own loss
// recovery (see tcpLink) and the kernel's detection of a dead peer, which
// the benchmarks replace with an immediate close: the best case for TCP.
type tcpPath struct {
	ln     net.Listener
	target string
	link   *tcpLink
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// fixedTCPLink is the handover benchmarks' path: oneWay each way, no
// jitter, unlimited rate.
func fixedTCPLink() *tcpLink { return newTCPLink(trace.Link{RTT: pathRTT}, 1) }

// newTCPPath starts a path on a fresh front address to target.
func newTCPPath(target string, link *tcpLink) (*tcpPath, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(loopbackIP(blockFront), 0).String())
	if err != nil {
		return nil, err
	}
	p := &tcpPath{ln: ln, target: target, link: link, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	return p, nil
}

// Addr returns the front, where clients connect.
func (p *tcpPath) Addr() netip.AddrPort { return p.ln.Addr().(*net.TCPAddr).AddrPort() }

func (p *tcpPath) serve() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		accepted := time.Now()
		if !p.track(down) {
			return
		}
		p.wg.Go(func() { p.carry(down, accepted.Add(3*p.link.oneWay())) })
	}
}

func (p *tcpPath) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpPath) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// carry relays both directions. Nothing the client sends reaches the
// server before the emulated handshake would have (open); the proxy
// connects to the server at once all the same, so that its own connect
// does not add to the path's delay (the servers here act only on data).
func (p *tcpPath) carry(down net.Conn, open time.Time) {
	defer p.untrack(down)
	up, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(up) {
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Go(func() { p.deliver(up, down, p.delayed(down, emu.Up, open)) })
	p.deliver(down, up, p.delayed(up, emu.Down, time.Time{}))
	wg.Wait()
}

// piece is what one read from a connection got, and when it arrives at
// the other end of the path. A piece without bytes is the end of the
// stream: an EOF, or a reset.
type piece struct {
	b     []byte
	at    time.Time
	reset bool
}

// delayed reads src until it ends, timing each read through the link but
// never before notBefore.
func (p *tcpPath) delayed(src net.Conn, dir emu.Dir, notBefore time.Time) <-chan piece {
	q := make(chan piece, 1<<14)
	go func() {
		defer close(q)
		arrival := func(n int) time.Time {
			at, readAgain := p.link.admit(dir, time.Now(), n)
			if at.Before(notBefore) {
				at = notBefore
			}
			if d := time.Until(readAgain); d > 0 {
				time.Sleep(d) // the bottleneck's queue is full
			}
			return at
		}
		for {
			b := make([]byte, 16<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- piece{b: b[:n], at: arrival(n)}
			}
			if err != nil {
				q <- piece{at: arrival(0), reset: !errors.Is(err, io.EOF)}
				return
			}
		}
	}()
	return q
}

// deliver writes what was read from src to dst, each piece at its time,
// and passes the end on: an EOF as a half-close, a reset as a close. A
// piece due in a blackout waits for the path to come back. When dst
// refuses a write (its end is gone), src learns it a path's delay later,
// as from the reset a real peer would send.
func (p *tcpPath) deliver(dst, src net.Conn, q <-chan piece) {
	var refused bool
	for pc := range q {
		sleepUntil(pc.at)
		if dark := p.link.darkUntil(); time.Now().Before(dark) {
			sleepUntil(dark.Add(p.link.oneWay()))
		}
		switch {
		case refused:
		case pc.reset:
			dst.Close()
		case pc.b == nil:
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		default:
			if _, err := dst.Write(pc.b); err != nil {
				refused = true
				time.AfterFunc(p.link.oneWay(), func() { src.Close() })
			}
		}
	}
}

// reset closes every connection through the path, as a NAT that lost its
// mappings answers the next segment with a reset: the best case for TCP,
// which otherwise learns it only when its retransmissions give up.
func (p *tcpPath) reset() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// Close stops the proxy and closes every connection through it.
func (p *tcpPath) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.reset()
	p.wg.Wait()
}
