package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
)

// The baselines that cannot move a connection reconnect and resume with
// the protocol an application writes by hand, as quick as it can be made:
// on each new connection the sender says hello (where an application
// would name its session), the receiver answers with how many bytes of the
// stream it holds, and the sender goes on from there. The sender learns
// at once that its connection is gone: it closes it itself when its
// address goes away, and a reader on the connection sees the peer's close
// as soon as it arrives. It finds the server's address in the same
// registry as roam does, and, like roam, watches it (resumeSender.follow).

// startSenders starts one resumeSender per flow of a lane, each following
// the service in mem and connecting with connect; wg counts them until
// they and their connections are done.
func startSenders(ctx context.Context, mem *resolve.Memory, connect func(context.Context, netip.AddrPort) (io.ReadWriteCloser, error), flows []*flowSender, wg *sync.WaitGroup) ([]*resumeSender, error) {
	senders := make([]*resumeSender, 0, len(flows))
	for i, fs := range flows {
		s := &resumeSender{mem: mem, name: service, flow: uint64(i), connect: connect, send: fs.send}
		if err := s.follow(ctx); err != nil {
			return senders, err
		}
		senders = append(senders, s)
		wg.Go(func() { s.run(ctx); s.wg.Wait() })
	}
	return senders, nil
}

// hello opens every session; the flow's ID follows it, so that one server
// can carry many flows, each resumed on its own.
const hello = "RESUME01"

// resumeSender is the client of one flow: it keeps one connection open to
// the service's registered address and streams on it, and reconnects
// whenever the connection fails.
type resumeSender struct {
	mem     *resolve.Memory
	name    string
	flow    uint64
	connect func(ctx context.Context, addr netip.AddrPort) (io.ReadWriteCloser, error)
	// send writes the stream from offset off until ctx ends, a write
	// fails, or the stream is complete (then it returns a nil error).
	send func(ctx context.Context, w io.Writer, off uint64) (uint64, error)
	wg   sync.WaitGroup

	// Errors counts what the application saw fail: connections that
	// ended under it and dials that failed; Reconnects, the sessions
	// after the first.
	errors, reconnects atomic.Int64

	mu   sync.Mutex
	cur  io.Closer
	addr netip.AddrPort // where cur goes
}

func (r *resumeSender) run(ctx context.Context) {
	for n := 0; ctx.Err() == nil; n++ {
		dctx, cancel := context.WithTimeout(ctx, hangBound)
		c, addr, err := r.dial(dctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				r.errors.Add(1)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Millisecond):
			}
			continue
		}
		if n > 0 {
			r.reconnects.Add(1)
		}
		r.mu.Lock()
		r.cur, r.addr = c, addr
		r.mu.Unlock()
		r.session(ctx, c)
		c.Close()
		if ctx.Err() == nil {
			r.errors.Add(1)
		}
	}
}

func (r *resumeSender) dial(ctx context.Context) (io.ReadWriteCloser, netip.AddrPort, error) {
	eps, err := r.mem.Resolve(ctx, r.name)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	c, err := r.connect(ctx, eps[0].Addr)
	return c, eps[0].Addr, err
}

// follow makes the sender leave its connection as soon as the registry
// no longer lists the address it goes to: a server that moved. roam's
// dialers learn of a move the same way, from the same in-process
// registry, so neither waits for the old connection's close to arrive.
func (r *resumeSender) follow(ctx context.Context) error {
	updates, err := r.mem.Watch(ctx, r.name)
	if err != nil {
		return err
	}
	r.wg.Go(func() {
		for eps := range updates {
			r.mu.Lock()
			if len(eps) > 0 && r.cur != nil && !slices.ContainsFunc(eps, func(e resolve.Endpoint) bool { return e.Addr == r.addr }) {
				r.cur.Close()
			}
			r.mu.Unlock()
		}
	})
	return nil
}

func (r *resumeSender) session(ctx context.Context, c io.ReadWriteCloser) {
	var h [len(hello) + 8]byte
	copy(h[:], hello)
	binary.BigEndian.PutUint64(h[len(hello):], r.flow)
	if _, err := c.Write(h[:]); err != nil {
		return
	}
	var off [8]byte
	if _, err := io.ReadFull(c, off[:]); err != nil {
		return
	}
	// The receiver sends nothing more: a read returns when the connection
	// ends, and closing it then stops the sender at its next write.
	ended := make(chan struct{})
	r.wg.Go(func() {
		io.Copy(io.Discard, c)
		c.Close()
		close(ended)
	})
	if _, err := r.send(ctx, c, binary.BigEndian.Uint64(off[:])); err == nil {
		// All sent; what is still in flight is lost if the connection
		// fails, so stay until it does (and resume) or the run ends.
		select {
		case <-ctx.Done():
		case <-ended:
		}
	}
}

// drop closes the current connection, as when its address went away.
func (r *resumeSender) drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil {
		r.cur.Close()
	}
}

// streamSink is what a receiver feeds: it reports how much of the stream
// it holds, which is where a resumed session goes on from.
type streamSink interface {
	drain(io.Reader)
	received() uint64
}

// resumeServer is the server of many flows: for each, the newest
// connection takes over the stream from the one before.
type resumeServer struct {
	sink func(flow uint64) streamSink // where a flow's bytes go; nil drops the session

	mu     sync.Mutex
	flows  map[uint64]*resumeReceiver
	open   map[io.Closer]struct{} // every connection being served
	closed bool
}

// resumeReceiver is one flow's end of a resumeServer.
type resumeReceiver struct {
	sink streamSink

	mu   sync.Mutex // held through a takeover
	cur  io.Closer
	done chan struct{} // closed when cur's reader has stopped
}

func (s *resumeServer) serve(c io.ReadWriteCloser) {
	if !s.track(c) {
		return
	}
	defer s.untrack(c)
	var h [len(hello) + 8]byte
	if _, err := io.ReadFull(c, h[:]); err != nil || string(h[:len(hello)]) != hello {
		return
	}
	flow := binary.BigEndian.Uint64(h[len(hello):])
	s.mu.Lock()
	r, ok := s.flows[flow]
	if !ok {
		sink := s.sink(flow)
		if sink == nil {
			s.mu.Unlock()
			return
		}
		if s.flows == nil {
			s.flows = map[uint64]*resumeReceiver{}
		}
		r = &resumeReceiver{sink: sink}
		s.flows[flow] = r
	}
	s.mu.Unlock()
	r.mu.Lock()
	if r.cur != nil {
		r.cur.Close()
		<-r.done // every byte it read is counted
	}
	var off [8]byte
	binary.BigEndian.PutUint64(off[:], r.sink.received())
	done := make(chan struct{})
	defer close(done)
	r.cur, r.done = c, done
	r.mu.Unlock()
	if _, err := c.Write(off[:]); err == nil {
		r.sink.drain(c)
	}
}

func (s *resumeServer) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	if s.open == nil {
		s.open = map[io.Closer]struct{}{}
	}
	s.open[c] = struct{}{}
	return true
}

func (s *resumeServer) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
	c.Close()
}

// close closes every connection being served, those still waiting for
// their hello too, and refuses new ones.
func (s *resumeServer) close() {
	s.mu.Lock()
	s.closed = true
	open := s.open
	s.open = nil
	s.mu.Unlock()
	for c := range open {
		c.Close()
	}
}

// closeCurrent closes the connections the streams are on, as a server
// that moves does with the connections at its old address.
func (s *resumeServer) closeCurrent() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.flows {
		r.mu.Lock()
		if r.cur != nil {
			r.cur.Close()
		}
		r.mu.Unlock()
	}
}

// tcpServer is the TCP baseline's server: a listener behind a tcpPath,
// registered in mem, that can move to a new address.
type tcpServer struct {
	recv *resumeServer
	link *tcpLink // the path's link, kept across moves; nil is fixedTCPLink
	mem  *resolve.Memory
	name string
	wg   sync.WaitGroup

	ln    net.Listener
	reg   resolve.Registration
	paths []*tcpPath // the old ones too: what is in them still arrives
}

// move opens a listener on a new address behind a new path, registers it,
// and then closes the old one and its connection; it returns when the new
// registration became visible. It starts the first listener too.
func (s *tcpServer) move(ctx context.Context) (time.Time, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(loopbackIP(blockServer), 0).String())
	if err != nil {
		return time.Time{}, err
	}
	if s.link == nil {
		s.link = fixedTCPLink()
	}
	path, err := newTCPPath(ln.Addr().String(), s.link)
	if err != nil {
		ln.Close()
		return time.Time{}, err
	}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.recv.serve(c) })
		}
	})
	reg, err := s.mem.Register(ctx, s.name, resolve.Endpoint{Addr: path.Addr()})
	registered := time.Now()
	if err != nil {
		ln.Close()
		path.Close()
		return time.Time{}, err
	}
	if s.ln != nil {
		s.reg.Close()
		s.ln.Close()
		s.recv.closeCurrent()
	}
	s.ln, s.reg = ln, reg
	s.paths = append(s.paths, path)
	return registered, nil
}

func (s *tcpServer) Close() {
	s.ln.Close()
	for _, p := range s.paths {
		p.Close()
	}
	s.wg.Wait()
}

// tcpConnect connects from a fresh port on the address local returns.
func tcpConnect(local func() netip.Addr) func(context.Context, netip.AddrPort) (io.ReadWriteCloser, error) {
	return func(ctx context.Context, addr netip.AddrPort) (io.ReadWriteCloser, error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local(), 0))}
		return d.DialContext(ctx, "tcp", addr.String())
	}
}

// quicServer is the baseline of raw quic-go for a server that moves: it
// cannot migrate (only clients can), so it listens on a new socket behind
// a new relay and its clients reconnect, as TCP's do.
type quicServer struct {
	recv   *resumeServer
	mem    *resolve.Memory
	name   string
	tlsCfg *tls.Config
	socks  *relayedUDP
	wg     sync.WaitGroup

	tr  *quic.Transport
	reg resolve.Registration
}

// move is tcpServer.move for QUIC.
func (s *quicServer) move(ctx context.Context) (time.Time, error) {
	pc, err := s.socks.listen()
	if err != nil {
		return time.Time{}, err
	}
	tr := &quic.Transport{Conn: pc}
	ln, err := tr.Listen(s.tlsCfg, nil)
	if err != nil {
		tr.Close()
		pc.Close()
		return time.Time{}, err
	}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			s.wg.Go(func() {
				st, err := c.AcceptStream(context.Background())
				if err != nil {
					return
				}
				s.recv.serve(streamConn{st, c})
			})
		}
	})
	reg, err := s.mem.Register(ctx, s.name, resolve.Endpoint{Addr: pc.front.AddrPort()})
	registered := time.Now()
	if err != nil {
		tr.Close()
		pc.Close()
		return time.Time{}, err
	}
	if s.tr != nil {
		s.reg.Close()
		s.recv.closeCurrent() // a CONNECTION_CLOSE tells the client
		old := s.tr
		s.wg.Go(func() { old.Close(); old.Conn.Close() })
	}
	s.tr, s.reg = tr, reg
	return registered, nil
}

func (s *quicServer) Close() {
	s.tr.Close()
	s.tr.Conn.Close()
	s.wg.Wait()
}

// streamConn is a QUIC connection with one stream, closed as a whole.
type streamConn struct {
	*quic.Stream
	conn *quic.Conn
}

func (s streamConn) Close() error { return s.conn.CloseWithError(0, "") }

// quicConnect opens a new connection from tr, and a stream on it.
func quicConnect(tr *quic.Transport, tlsCfg *tls.Config) func(context.Context, netip.AddrPort) (io.ReadWriteCloser, error) {
	return func(ctx context.Context, addr netip.AddrPort) (io.ReadWriteCloser, error) {
		c, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(addr), tlsCfg, nil)
		if err != nil {
			return nil, err
		}
		st, err := c.OpenStreamSync(ctx)
		if err != nil {
			c.CloseWithError(0, "")
			return nil, err
		}
		return streamConn{st, c}, nil
	}
}

// reset closes every connection through the server's paths, as a NAT
// that lost its mappings does (tcpPath.reset).
func (s *tcpServer) reset() {
	for _, p := range s.paths {
		p.reset()
	}
}
