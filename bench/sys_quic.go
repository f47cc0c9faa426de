package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/mobility/trace"
	"github.com/roamnet/roam/resolve"
)

// quicLane carries each flow on a raw quic-go connection of its own,
// resumed by hand (reconnect.go) when the connection fails. With migrate
// the client moves its connections by hand at a handover (AddPath, Probe,
// Switch), as roam does inside; without it, it reconnects from the new
// address, as over TCP. quic-go lets only clients migrate, so neither can
// follow a server that moved: both reconnect to its new address, which
// they learn from the registry, as roam does.
type quicLane struct {
	migrate bool

	dead      emu.DeadAddrs
	socks     relayedUDP
	mem       *resolve.Memory
	reg       resolve.Registration
	srv       resumeServer
	clientTLS *tls.Config
	conf      *quic.Config
	senders   []*resumeSender
	wg        sync.WaitGroup

	mu    sync.Mutex
	tr    *quic.Transport // the client's current socket
	trs   []*quic.Transport
	conns map[*quic.Conn]struct{} // the client's open connections
}

// baselineQUIC is the quic-go configuration of the baselines: roam's
// keep-alive, and quic-go's defaults otherwise (a 30 s idle timeout).
func baselineQUIC() *quic.Config { return &quic.Config{KeepAlivePeriod: 10 * time.Second} }

func (l *quicLane) start(ctx context.Context, env *laneEnv) error {
	serverTLS, clientTLS, err := newTLSConfigs(false)
	if err != nil {
		return err
	}
	l.clientTLS, l.conf = clientTLS, baselineQUIC()
	l.conns = map[*quic.Conn]struct{}{}
	l.socks = relayedUDP{link: emu.LinkConfigOf(env.link), hook: l.dead.Hook, seed: env.seed}
	pc, err := l.socks.listen()
	if err != nil {
		return err
	}
	str := &quic.Transport{Conn: pc}
	l.trs = append(l.trs, str)
	ln, err := str.Listen(serverTLS, l.conf)
	if err != nil {
		return err
	}
	l.srv.sink = func(flow uint64) streamSink {
		if flow < uint64(len(env.records)) {
			return env.records[flow]
		}
		return nil
	}
	l.wg.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			l.wg.Go(func() {
				st, err := c.AcceptStream(ctx)
				if err == nil {
					l.srv.serve(streamConn{st, c})
				}
			})
		}
	})
	l.mem = resolve.NewMemory()
	if l.reg, err = l.mem.Register(ctx, service, resolve.Endpoint{Addr: pc.front.AddrPort()}); err != nil {
		return err
	}
	if err := l.newClientSocket(); err != nil {
		return err
	}
	senders, err := startSenders(ctx, l.mem, l.connect, env.senders, &l.wg)
	l.senders = senders
	return err
}

// newClientSocket opens the client's socket on a fresh address.
func (l *quicLane) newClientSocket() error {
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopbackIP(blockClient), 0)))
	if err != nil {
		return err
	}
	tr := &quic.Transport{Conn: uc}
	l.mu.Lock()
	l.tr = tr
	l.trs = append(l.trs, tr)
	l.mu.Unlock()
	return nil
}

func (l *quicLane) connect(ctx context.Context, addr netip.AddrPort) (io.ReadWriteCloser, error) {
	l.mu.Lock()
	tr := l.tr
	l.mu.Unlock()
	c, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(addr), l.clientTLS, l.conf)
	if err != nil {
		return nil, err
	}
	st, err := c.OpenStreamSync(ctx)
	if err != nil {
		c.CloseWithError(0, "")
		return nil, err
	}
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	l.wg.Go(func() {
		<-c.Context().Done()
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	})
	return streamConn{st, c}, nil
}

func (l *quicLane) setLink(lk trace.Link)    { l.socks.current().SetLink(lk) }
func (l *quicLane) blackout(d time.Duration) { l.socks.current().Blackout(d) }
func (l *quicLane) rebind()                  { l.socks.current().Rebind() }

func (l *quicLane) handover(ctx context.Context, outage time.Duration) {
	r := l.socks.current()
	l.mu.Lock()
	old := l.tr.Conn.LocalAddr().(*net.UDPAddr).AddrPort()
	l.mu.Unlock()
	mapped, _ := r.Mapping(old)
	l.dead.Kill(old, mapped)
	r.Handover(outage)
	l.wg.Go(func() {
		afterOutage(ctx, outage, func() {
			if l.newClientSocket() != nil {
				return
			}
			if !l.migrate {
				for _, s := range l.senders {
					s.drop()
				}
				return
			}
			l.migrateAll(ctx)
		})
	})
}

// probeTimeout bounds the hand-driven migration's probe before the
// application gives up and reconnects: several RTTs of the slowest path
// here, as a careful application would choose. (quic-go sends no
// PATH_CHALLENGE while congestion-limited, so a probe under bulk load may
// never leave: the timeout then decides the stall.)
const probeTimeout = time.Second

// migrateAll moves every open connection to the new socket, as an
// application using quic-go's path API does; a connection whose probe
// fails is closed, and its flow reconnects.
func (l *quicLane) migrateAll(ctx context.Context) {
	l.mu.Lock()
	tr := l.tr
	conns := make([]*quic.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			path, err := c.AddPath(tr)
			if err == nil {
				pctx, cancel := context.WithTimeout(ctx, probeTimeout)
				err = path.Probe(pctx)
				cancel()
				if err == nil {
					err = path.Switch()
				}
			}
			if err != nil {
				c.CloseWithError(0, "migration failed")
			}
		})
	}
	wg.Wait()
}

func (l *quicLane) moveServer(ctx context.Context) {
	r := l.socks.current()
	if r.MoveServer() != nil {
		return
	}
	reg, err := l.mem.Register(ctx, service, resolve.Endpoint{Addr: r.ServerAddr()})
	if err != nil {
		return
	}
	l.reg.Close()
	l.reg = reg
}

func (l *quicLane) counts() laneCounts {
	var c laneCounts
	for _, s := range l.senders {
		c.appErrors += s.errors.Load()
		c.reconnects += s.reconnects.Load()
	}
	return c
}

func (l *quicLane) close() {
	l.srv.close()
	l.mu.Lock()
	trs := l.trs
	l.trs = nil
	l.mu.Unlock()
	for _, tr := range trs {
		tr.Close()
		tr.Conn.Close()
	}
	l.wg.Wait()
	l.socks.Close()
}

func (l *quicLane) sentBytes() uint64 { return l.socks.offered() }
