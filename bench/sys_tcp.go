package main

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/mobility/trace"
	"github.com/roamnet/roam/resolve"
)

// tcpLane carries each flow on a TCP connection of its own through a
// tcpPath, resumed by hand (reconnect.go) whenever the connection fails:
// the best an application does by hand over TCP. Where the others' path
// loses datagrams at random, the TCP path loses nothing (see tcpLink).
type tcpLane struct {
	link    *tcpLink
	srv     tcpServer
	local   atomic.Pointer[netip.Addr]
	senders []*resumeSender
	wg      sync.WaitGroup
}

func (l *tcpLane) start(ctx context.Context, env *laneEnv) error {
	l.link = newTCPLink(env.link, env.seed)
	l.srv = tcpServer{
		recv: &resumeServer{sink: func(flow uint64) streamSink {
			if flow < uint64(len(env.records)) {
				return env.records[flow]
			}
			return nil
		}},
		link: l.link, mem: resolve.NewMemory(), name: service,
	}
	if _, err := l.srv.move(ctx); err != nil {
		return err
	}
	ip := loopbackIP(blockClient)
	l.local.Store(&ip)
	connect := tcpConnect(func() netip.Addr { return *l.local.Load() })
	for i, fs := range env.senders {
		s := &resumeSender{mem: l.srv.mem, name: service, flow: uint64(i), connect: connect, send: fs.send}
		if err := s.follow(ctx); err != nil {
			return err
		}
		l.senders = append(l.senders, s)
		l.wg.Go(func() { s.run(ctx); s.wg.Wait() })
	}
	return nil
}

func (l *tcpLane) setLink(lk trace.Link)    { l.link.set(lk) }
func (l *tcpLane) blackout(d time.Duration) { l.link.blackout(d, true) }
func (l *tcpLane) rebind()                  { l.srv.reset() }

// handover: the path goes dark for the outage; then the client has a new
// address, its connections are dead, and it reconnects at once.
func (l *tcpLane) handover(ctx context.Context, outage time.Duration) {
	l.link.blackout(outage, false)
	l.wg.Go(func() {
		afterOutage(ctx, outage, func() {
			ip := loopbackIP(blockClient)
			l.local.Store(&ip)
			for _, s := range l.senders {
				s.drop()
			}
		})
	})
}

func (l *tcpLane) moveServer(ctx context.Context) { l.srv.move(ctx) }

func (l *tcpLane) counts() laneCounts {
	var c laneCounts
	for _, s := range l.senders {
		c.appErrors += s.errors.Load()
		c.reconnects += s.reconnects.Load()
	}
	return c
}

func (l *tcpLane) close() {
	l.srv.recv.close()
	if l.srv.ln != nil {
		l.srv.Close()
	}
	l.wg.Wait()
}
