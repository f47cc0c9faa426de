package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/mobility/netns"
	"github.com/roamnet/roam/mobility/trace"
)

// kernelNet runs the kernel's own TCP and MPTCP over the same link model
// as the relay gives the UDP systems: a client and a server network
// namespace, each with one TUN device, whose IP packets this process
// carries through emu.Link models (delay, jitter, loss, rate and its
// queue, blackouts), a NAT in front of the client (nat.go), and dead
// addresses. The kernel's netem is not needed. It needs root on Linux.
//
//	client ns: tun0 10.201.1.N ──Up link──▶ NAT ──▶ tun0 10.201.0.M :server ns
//	           (N new per handover)  ◀──Down link──   (M new per server move)
//
// With several paths (newKernelNet with a link per path) the client's
// tun0 has an address per path, 10.201.1+i.N for path i, and what it
// sends from path i's address, or what the server sends to it, takes
// path i's links: routing by source address, as emu.MultiPath does, done
// here where the packets pass.
type kernelNet struct {
	client, server *netns.Namespace
	ctun, stun     *os.File
	paths          []*kernelPath
	nat            natTable
	dead           sync.Map // netip.Addr → struct{}: addresses that are gone
	wg             sync.WaitGroup

	mu        sync.Mutex
	srvAddr   netip.Addr
	serverSeq byte
}

// kernelPath is one of the client's paths to the server.
type kernelPath struct {
	links    [2]*emu.Link
	darkFrom atomic.Int64 // UnixNano of the latest blackout's start
	// Guarded by kernelNet.mu.
	addr netip.Addr
	seq  byte
}

// kernelAvailable says why kernelNet cannot run here, or "".
func kernelAvailable() string {
	if err := netns.Available(); err != nil {
		return err.Error()
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "no /dev/net/tun"
	}
	return ""
}

// kernelCC is the congestion control of the kernel's TCP and MPTCP:
// Cubic, as quic-go's, so that the systems differ in how they move, not in
// how they meet random loss (BBR, where a machine defaults to it, ignores
// random loss, and so outruns every loss-based sender on a lossy path).
var kernelCC = "cubic"

// newKernelNet makes the namespaces and a client path per link.
func newKernelNet(links []trace.Link, seed uint64) (_ *kernelNet, err error) {
	k := &kernelNet{}
	for i, link := range links {
		cfg := emu.LinkConfigOf(link)
		p := &kernelPath{}
		s := seed*2 + uint64(i)<<32 // the first path's seeds are those of the single-path net
		p.links[emu.Up] = emu.NewLink(cfg, s)
		p.links[emu.Down] = emu.NewLink(cfg, s+1)
		k.paths = append(k.paths, p)
	}
	defer func() {
		if err != nil {
			k.close()
		}
	}()
	if k.client, err = netns.NewNamespace("-kc"); err != nil {
		return nil, err
	}
	if k.server, err = netns.NewNamespace("-ks"); err != nil {
		return nil, err
	}
	for _, side := range []struct {
		ns  *netns.Namespace
		tun **os.File
	}{{k.client, &k.ctun}, {k.server, &k.stun}} {
		if err := side.ns.Do(func() (err error) { *side.tun, err = openTUN("tun0"); return err }); err != nil {
			return nil, fmt.Errorf("TUN device: %w", err)
		}
		for _, args := range [][]string{{"link", "set", "tun0", "up"}, {"route", "add", "default", "dev", "tun0"}} {
			if err := side.ns.IP(args...); err != nil {
				return nil, err
			}
		}
	}
	for i, p := range k.paths {
		if p.addr, err = k.newClientAddr(i); err != nil {
			return nil, err
		}
	}
	if k.srvAddr, err = k.newServerAddr(); err != nil {
		return nil, err
	}
	k.wg.Go(func() { k.carry(emu.Up, k.ctun, k.stun) })
	k.wg.Go(func() { k.carry(emu.Down, k.stun, k.ctun) })
	return k, nil
}

// newClientAddr adds a fresh address of path i to the client's tun0.
func (k *kernelNet) newClientAddr(i int) (netip.Addr, error) {
	k.mu.Lock()
	p := k.paths[i]
	p.seq++
	a := netip.AddrFrom4([4]byte{10, 201, byte(1 + i), p.seq})
	k.mu.Unlock()
	return a, k.client.AddAddr("tun0", netip.PrefixFrom(a, 32))
}

func (k *kernelNet) newServerAddr() (netip.Addr, error) {
	k.mu.Lock()
	k.serverSeq++
	a := netip.AddrFrom4([4]byte{10, 201, 0, k.serverSeq})
	k.mu.Unlock()
	return a, k.server.AddAddr("tun0", netip.PrefixFrom(a, 32))
}

// queued is a packet in a link, and when it leaves.
type queued struct {
	b        []byte
	at, sent time.Time
}

// carry moves packets from one TUN device through a direction's link of
// their path to the other until the devices close. Each path has its own
// queue, so that a slow path does not hold a fast one's packets.
func (k *kernelNet) carry(dir emu.Dir, from, to *os.File) {
	qs := make([]chan queued, len(k.paths))
	var deliverers sync.WaitGroup
	for i := range qs {
		q := make(chan queued, 1<<14)
		qs[i] = q
		dark := &k.paths[i].darkFrom
		deliverers.Go(func() {
			for p := range q {
				sleepUntil(p.at)
				if p.sent.UnixNano() < dark.Load() {
					continue // in flight when a blackout began
				}
				to.Write(p.b)
			}
		})
	}
	defer deliverers.Wait()
	defer func() {
		for _, q := range qs {
			close(q)
		}
	}()
	for {
		b := make([]byte, 2048)
		n, err := from.Read(b)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		b = b[:n]
		i, ok := k.pass(dir, b)
		if !ok {
			continue
		}
		now := time.Now()
		at, why := k.paths[i].links[dir].Admit(now, n)
		if why != emu.NotDropped {
			continue
		}
		qs[i] <- queued{b: b, at: at, sent: now}
	}
}

// pass applies the dead addresses and the NAT to a packet, and returns
// the path it takes: that of the client's address, its source going up
// and its destination coming down.
func (k *kernelNet) pass(dir emu.Dir, p []byte) (int, bool) {
	_, _, src, dst, ok := ipv4Header(p)
	if !ok {
		return 0, false // IPv6 router solicitations and the like
	}
	if _, gone := k.dead.Load(src); gone {
		return 0, false
	}
	if _, gone := k.dead.Load(dst); gone {
		return 0, false
	}
	client := src
	if dir == emu.Down {
		client = dst
	}
	i := int(client.As4()[2]) - 1
	if i < 0 || i >= len(k.paths) {
		i = 0
	}
	if dir == emu.Up {
		return i, k.nat.translateUp(p)
	}
	return i, k.nat.translateDown(p)
}

// setLink sets the first path's links.
func (k *kernelNet) setLink(l trace.Link) { k.setLinkOn(0, l) }

func (k *kernelNet) setLinkOn(i int, l trace.Link) {
	cfg := emu.LinkConfigOf(l)
	k.paths[i].links[emu.Up].Set(cfg)
	k.paths[i].links[emu.Down].Set(cfg)
}

// blackout cuts every path, as a tunnel does.
func (k *kernelNet) blackout(d time.Duration) {
	for i := range k.paths {
		k.blackoutOn(i, d)
	}
}

func (k *kernelNet) blackoutOn(i int, d time.Duration) {
	now := time.Now()
	p := k.paths[i]
	p.darkFrom.Store(now.UnixNano())
	p.links[emu.Up].Blackout(now, d)
	p.links[emu.Down].Blackout(now, d)
}

// killClient makes the client's address on path i dead, as at a
// handover.
func (k *kernelNet) killClient(i int) netip.Addr {
	k.mu.Lock()
	old := k.paths[i].addr
	k.mu.Unlock()
	k.dead.Store(old, struct{}{})
	return old
}

// moveClient gives the client a new address on path i and removes old.
func (k *kernelNet) moveClient(i int, old netip.Addr) (netip.Addr, error) {
	a, err := k.newClientAddr(i)
	if err != nil {
		return netip.Addr{}, err
	}
	k.mu.Lock()
	k.paths[i].addr = a
	k.mu.Unlock()
	k.client.DelAddr("tun0", netip.PrefixFrom(old, 32))
	return a, nil
}

// clientIP returns the client's address on path i.
func (k *kernelNet) clientIP(i int) netip.Addr {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.paths[i].addr
}

// offered returns the bytes the client offered its paths toward the
// server.
func (k *kernelNet) offered() uint64 {
	var n uint64
	for _, p := range k.paths {
		n += p.links[emu.Up].Stats().Offered
	}
	return n
}

func (k *kernelNet) close() {
	for _, f := range []*os.File{k.ctun, k.stun} {
		if f != nil {
			f.Close()
		}
	}
	k.wg.Wait()
	for _, ns := range []*netns.Namespace{k.client, k.server} {
		if ns != nil {
			ns.Close()
		}
	}
}
