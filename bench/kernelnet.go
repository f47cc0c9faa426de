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
type kernelNet struct {
	client, server *netns.Namespace
	ctun, stun     *os.File
	links          [2]*emu.Link
	nat            natTable
	dead           sync.Map     // netip.Addr → struct{}: addresses that are gone
	darkFrom       atomic.Int64 // UnixNano of the latest blackout's start
	wg             sync.WaitGroup

	mu                   sync.Mutex
	clientAddr, srvAddr  netip.Addr
	clientSeq, serverSeq byte
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

func newKernelNet(link trace.Link, seed uint64) (_ *kernelNet, err error) {
	k := &kernelNet{}
	cfg := emu.LinkConfigOf(link)
	k.links[emu.Up] = emu.NewLink(cfg, seed*2)
	k.links[emu.Down] = emu.NewLink(cfg, seed*2+1)
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
	if k.clientAddr, err = k.newClientAddr(); err != nil {
		return nil, err
	}
	if k.srvAddr, err = k.newServerAddr(); err != nil {
		return nil, err
	}
	k.wg.Go(func() { k.carry(emu.Up, k.ctun, k.stun) })
	k.wg.Go(func() { k.carry(emu.Down, k.stun, k.ctun) })
	return k, nil
}

func (k *kernelNet) newClientAddr() (netip.Addr, error) {
	k.mu.Lock()
	k.clientSeq++
	a := netip.AddrFrom4([4]byte{10, 201, 1, k.clientSeq})
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

// carry moves packets from one TUN device through a direction's link to
// the other until the devices close.
func (k *kernelNet) carry(dir emu.Dir, from, to *os.File) {
	q := make(chan queued, 1<<14)
	var deliverer sync.WaitGroup
	deliverer.Go(func() {
		for p := range q {
			sleepUntil(p.at)
			if p.sent.UnixNano() < k.darkFrom.Load() {
				continue // in flight when a blackout began
			}
			to.Write(p.b)
		}
	})
	defer deliverer.Wait()
	defer close(q)
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
		if !k.pass(dir, b) {
			continue
		}
		now := time.Now()
		at, why := k.links[dir].Admit(now, n)
		if why != emu.NotDropped {
			continue
		}
		q <- queued{b: b, at: at, sent: now}
	}
}

// pass applies the dead addresses and the NAT to a packet.
func (k *kernelNet) pass(dir emu.Dir, p []byte) bool {
	_, _, src, dst, ok := ipv4Header(p)
	if !ok {
		return false // IPv6 router solicitations and the like
	}
	if _, gone := k.dead.Load(src); gone {
		return false
	}
	if _, gone := k.dead.Load(dst); gone {
		return false
	}
	if dir == emu.Up {
		return k.nat.translateUp(p)
	}
	return k.nat.translateDown(p)
}

func (k *kernelNet) setLink(l trace.Link) {
	cfg := emu.LinkConfigOf(l)
	k.links[emu.Up].Set(cfg)
	k.links[emu.Down].Set(cfg)
}

func (k *kernelNet) blackout(d time.Duration) {
	now := time.Now()
	k.darkFrom.Store(now.UnixNano())
	k.links[emu.Up].Blackout(now, d)
	k.links[emu.Down].Blackout(now, d)
}

// killClient makes the client's address dead, as at a handover.
func (k *kernelNet) killClient() netip.Addr {
	k.mu.Lock()
	old := k.clientAddr
	k.mu.Unlock()
	k.dead.Store(old, struct{}{})
	return old
}

// moveClient gives the client a new address and removes old.
func (k *kernelNet) moveClient(old netip.Addr) (netip.Addr, error) {
	a, err := k.newClientAddr()
	if err != nil {
		return netip.Addr{}, err
	}
	k.mu.Lock()
	k.clientAddr = a
	k.mu.Unlock()
	k.client.DelAddr("tun0", netip.PrefixFrom(old, 32))
	return a, nil
}

func (k *kernelNet) clientIP() netip.Addr {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.clientAddr
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
