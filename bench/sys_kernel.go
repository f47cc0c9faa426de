package main

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/mobility/netns"
	"github.com/roamnet/roam/mobility/trace"
	"github.com/roamnet/roam/resolve"
)

// kernelLane carries each flow on a kernel TCP connection of its own, or
// with multipath an MPTCP one, over a kernelNet, resumed by hand
// (reconnect.go) whenever the connection fails, as tcpLane does over the
// userspace path. At a handover a TCP client reconnects from its new
// address; an MPTCP client instead announces the new address to its
// kernel as a subflow endpoint and keeps its connections, which is what
// MPTCP is for, and reconnects only if a connection fails all the same.
//
// With dual, the lane runs over every path of a multi-path scenario: the
// client's MPTCP connections open from the first path's address and have
// a subflow endpoint on each, and a path's handover moves that path's
// address alone.
type kernelLane struct {
	multipath bool
	dual      bool

	net      *kernelNet
	mem      *resolve.Memory
	srv      resumeServer
	senders  []*resumeSender
	wg       sync.WaitGroup
	fellBack bool // a dial got plain TCP where MPTCP was asked for

	mu  sync.Mutex
	ln  net.Listener
	reg resolve.Registration
}

const kernelPort = 5000

func (l *kernelLane) start(ctx context.Context, env *laneEnv) error {
	var err error
	links := []trace.Link{env.link}
	if l.dual {
		links = env.links
	}
	if l.net, err = newKernelNet(links, env.seed); err != nil {
		return err
	}
	if l.multipath {
		for _, ns := range []*netns.Namespace{l.net.client, l.net.server} {
			if err := ns.IP("mptcp", "limits", "set", "subflow", "8", "add_addr_accepted", "8"); err != nil {
				return err
			}
		}
		for i := range l.net.paths {
			if err := l.endpoint("add", i, l.net.clientIP(i)); err != nil {
				return err
			}
		}
	}
	l.srv.sink = func(flow uint64) streamSink {
		if flow < uint64(len(env.records)) {
			return env.records[flow]
		}
		return nil
	}
	l.mem = resolve.NewMemory()
	if err := l.listen(ctx, l.net.srvAddr); err != nil {
		return err
	}
	senders, err := startSenders(ctx, l.mem, l.connect, env.senders, &l.wg)
	l.senders = senders
	return err
}

// endpoint adds or deletes addr as an MPTCP subflow endpoint of the
// client. Its ID is the address's last byte, unique in the run, so that
// the dead address's endpoint can be deleted: the kernel keeps trying
// the endpoints it has, and counts their subflows against its limit.
// The IDs of path i's addresses are 120i+1 to 120i+120, reused after 120
// handovers of the path, long after the address was deleted.
func (l *kernelLane) endpoint(op string, path int, addr netip.Addr) error {
	id := strconv.Itoa((int(addr.As4()[3])-1)%120 + 1 + 120*path)
	if op == "add" {
		return l.net.client.IP("mptcp", "endpoint", "add", addr.String(), "dev", "tun0", "id", id, "subflow")
	}
	return l.net.client.IP("mptcp", "endpoint", "delete", "id", id)
}

// listen opens the server's listener on addr, registers it, and closes
// the old one with its connections, as a server that moved.
func (l *kernelLane) listen(ctx context.Context, addr netip.Addr) error {
	var ln net.Listener
	err := l.net.server.Do(func() (err error) {
		lc := net.ListenConfig{Control: setCongestion(kernelCC)}
		lc.SetMultipathTCP(l.multipath)
		ln, err = lc.Listen(ctx, "tcp", netip.AddrPortFrom(addr, kernelPort).String())
		return err
	})
	if err != nil {
		return err
	}
	l.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.wg.Go(func() { l.srv.serve(c) })
		}
	})
	reg, err := l.mem.Register(ctx, service, resolve.Endpoint{Addr: netip.AddrPortFrom(addr, kernelPort)})
	if err != nil {
		ln.Close()
		return err
	}
	l.mu.Lock()
	oldLn, oldReg := l.ln, l.reg
	l.ln, l.reg = ln, reg
	l.mu.Unlock()
	if oldLn != nil {
		oldReg.Close()
		oldLn.Close()
		l.srv.closeCurrent()
	}
	return nil
}

func (l *kernelLane) connect(ctx context.Context, addr netip.AddrPort) (io.ReadWriteCloser, error) {
	var c net.Conn
	err := l.net.client.Do(func() (err error) {
		d := net.Dialer{
			LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(l.net.clientIP(0), 0)),
			Control:   setCongestion(kernelCC),
		}
		d.SetMultipathTCP(l.multipath)
		c, err = d.DialContext(ctx, "tcp", addr.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	if l.multipath {
		if mp, err := c.(*net.TCPConn).MultipathTCP(); err == nil && !mp {
			l.mu.Lock()
			l.fellBack = true
			l.mu.Unlock()
		}
	}
	return c, nil
}

func (l *kernelLane) setLink(lk trace.Link)    { l.net.setLink(lk) }
func (l *kernelLane) blackout(d time.Duration) { l.net.blackout(d) }
func (l *kernelLane) rebind()                  { l.net.nat.rebind() }

func (l *kernelLane) handover(ctx context.Context, outage time.Duration) {
	l.handoverOn(ctx, 0, outage)
}

func (l *kernelLane) handoverOn(ctx context.Context, path int, outage time.Duration) {
	old := l.net.killClient(path)
	l.net.blackoutOn(path, outage)
	l.wg.Go(func() {
		afterOutage(ctx, outage, func() {
			a, err := l.net.moveClient(path, old)
			if err != nil {
				return
			}
			if l.multipath {
				l.endpoint("add", path, a)
				l.endpoint("delete", path, old)
				return
			}
			for _, s := range l.senders {
				s.drop()
			}
		})
	})
}

func (l *kernelLane) moveServer(ctx context.Context) {
	a, err := l.net.newServerAddr()
	if err != nil {
		return
	}
	l.net.mu.Lock()
	old := l.net.srvAddr
	l.net.srvAddr = a
	l.net.mu.Unlock()
	if l.listen(ctx, a) == nil {
		l.net.dead.Store(old, struct{}{})
	}
}

func (l *kernelLane) counts() laneCounts {
	var c laneCounts
	for _, s := range l.senders {
		c.appErrors += s.errors.Load()
		c.reconnects += s.reconnects.Load()
	}
	return c
}

// note says what the lane's figures need to be read with.
func (l *kernelLane) note() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fellBack {
		return "MPTCP fell back to TCP on some connections"
	}
	return ""
}

func (l *kernelLane) close() {
	for _, s := range l.senders {
		s.drop() // a write blocked on a dead path returns
	}
	l.mu.Lock()
	ln := l.ln
	l.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	l.srv.close()
	if l.net != nil {
		l.net.close()
	}
	l.wg.Wait()
}

func (l *kernelLane) sentBytes() uint64 { return l.net.offered() }

// dualKernelLane is a kernelLane with dual set, over every path of a
// multi-path scenario.
type dualKernelLane struct{ kernelLane }

func (l *dualKernelLane) setLinkOn(path int, lk trace.Link) { l.net.setLinkOn(path, lk) }

func (l *dualKernelLane) note() string {
	var per []uint64
	for _, p := range l.net.paths {
		per = append(per, p.links[emu.Up].Stats().Offered)
	}
	if n := l.kernelLane.note(); n != "" {
		return n + "; " + pathShares(per)
	}
	return pathShares(per)
}
