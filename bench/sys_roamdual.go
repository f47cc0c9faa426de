package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/mobility/trace"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// multiRoamLane carries the flows on roam over an in-memory
// emu.MultiPath: a path per carrier, from a client address of its own to
// the server's one address (routing by source address). With paths > 1
// the client Host uses that many of them at once (Config.Paths); with 1
// it is the same roam on the first path alone, over the same emulator, so
// that the two compare like for like.
//
// A carrier's handover is its path's (emu.Path.Handover): an outage, then
// a new mapping at the carrier's NAT. The client's local address stays,
// as a modem's does inside one carrier, so nothing tells the Host: roam
// finds out from the path itself. A tunnel cuts every path.
type multiRoamLane struct {
	paths  int
	policy sal.PathPolicy // the client's
	nw     *emu.Network
	mp     *emu.MultiPath
	server *sal.Host
	client *sal.Host
	wg     sync.WaitGroup

	appErrors atomic.Int64
	resumes   atomic.Int64
}

// The addresses of the multi-path lanes: the server's own, and the
// client's on each path.
var (
	multiServer = netip.MustParseAddrPort("10.9.0.1:443")
	multiClient = []netip.Addr{netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("10.0.2.1")}
)

func (l *multiRoamLane) start(ctx context.Context, env *laneEnv) error {
	if len(env.links) < l.paths || l.paths > len(multiClient) {
		return fmt.Errorf("%d paths wanted, the scenario has %d", l.paths, len(env.links))
	}
	l.nw = emu.NewNetwork(env.seed)
	var routes []emu.Route
	for i, lk := range env.links[:min(len(env.links), len(multiClient))] {
		cfg := emu.LinkConfigOf(lk)
		routes = append(routes, emu.Route{From: multiClient[i], PathConfig: emu.PathConfig{Up: cfg, Down: cfg}})
	}
	var err error
	if l.mp, err = l.nw.NewMultiPath(multiServer, routes...); err != nil {
		return err
	}
	mem := resolve.NewMemory()
	l.server, err = sal.NewHost(sal.Config{Resolver: mem, ListenAddr: multiServer.String(),
		ListenPacket: l.nw.ListenPacket, AdvertiseAddr: l.mp.ServerAddr()})
	if err != nil {
		return err
	}
	cfg := sal.Config{Resolver: mem, ListenAddr: netip.AddrPortFrom(multiClient[0], 0).String(),
		PathPolicy: l.policy, ListenPacket: l.nw.ListenPacket, OnEvent: func(e sal.Event) {
			if e.Kind == sal.EventResumed {
				l.resumes.Add(1)
			}
		}}
	for _, a := range multiClient[1:l.paths] {
		cfg.Paths = append(cfg.Paths, netip.AddrPortFrom(a, 0).String())
	}
	if l.client, err = sal.NewHost(cfg); err != nil {
		return err
	}
	return runRoamFlows(ctx, env, l.server, l.client, &l.wg, &l.appErrors)
}

func (l *multiRoamLane) setLink(lk trace.Link) { l.setLinkOn(0, lk) }

func (l *multiRoamLane) setLinkOn(path int, lk trace.Link) {
	if ps := l.mp.Paths(); path < len(ps) {
		ps[path].SetLink(lk)
	}
}

func (l *multiRoamLane) blackout(d time.Duration) { l.mp.Blackout(d) }

func (l *multiRoamLane) rebind() {
	for _, p := range l.mp.Paths() {
		p.Rebind()
	}
}

func (l *multiRoamLane) handover(ctx context.Context, outage time.Duration) {
	l.handoverOn(ctx, 0, outage)
}

func (l *multiRoamLane) handoverOn(_ context.Context, path int, outage time.Duration) {
	if ps := l.mp.Paths(); path < len(ps) {
		ps[path].Handover(outage)
	}
}

func (l *multiRoamLane) moveServer(ctx context.Context) {
	if l.mp.MoveServer() == nil {
		l.server.SetAdvertiseAddr(ctx, l.mp.ServerAddr())
	}
}

// sentBytes is what the client offered every path toward the server.
func (l *multiRoamLane) sentBytes() uint64 {
	var n uint64
	for _, p := range l.mp.Paths() {
		n += p.Link(emu.Up).Stats().Offered
	}
	return n
}

func (l *multiRoamLane) counts() laneCounts {
	return laneCounts{appErrors: l.appErrors.Load(), resumes: l.resumes.Load()}
}

func (l *multiRoamLane) close() {
	if l.client != nil {
		l.client.Close()
	}
	if l.server != nil {
		l.server.Close()
	}
	l.wg.Wait()
	if l.nw != nil {
		l.nw.Close()
	}
}

// note gives each path's share of the bytes the client sent.
func (l *multiRoamLane) note() string {
	if l.paths < 2 {
		return ""
	}
	var per []uint64
	for _, p := range l.mp.Paths() {
		per = append(per, p.Link(emu.Up).Stats().Offered)
	}
	return pathShares(per)
}

// pathShares says what share of the bytes sent each path carried.
func pathShares(per []uint64) string {
	var all uint64
	for _, n := range per {
		all += n
	}
	if all == 0 {
		return ""
	}
	s := "sent by path:"
	for i, n := range per {
		if i > 0 {
			s += " /"
		}
		s += fmt.Sprintf(" %.0f%%", 100*float64(n)/float64(all))
	}
	return s
}
