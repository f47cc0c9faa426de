package emu

import (
	"net/netip"
	"sync"
	"time"

	"github.com/roamnet/roam/mobility/trace"
)

// firstMapPort is the first port of a fresh mapping address.
const firstMapPort = 1024

// Path is a modelled path between clients and one server of an in-memory
// Network, through something like a carrier's NAT. Clients send to
// ServerAddr; the server sees each client at a mapping, an address the
// path assigns when the client's first datagram comes out of the link.
// Each direction runs through its own Link model.
//
// Handover gives every client a new mapping on a new address (a new
// cell); Rebind a new port on the same address (NAT rebinding); MoveServer
// a new ServerAddr. Old addresses stay dead: datagrams sent to them are
// dropped with DropStale. Path implements trace.Target.
type Path struct {
	shaper // Link, Configure, SetLink, SetHook, Blackout, Handover, Rebind
	nw     *Network
	server netip.AddrPort
	sched  [2]*sched[flight]

	mu       sync.Mutex
	front    netip.AddrPort
	fronts   map[netip.AddrPort]bool           // every front the path had
	toMapped map[netip.AddrPort]netip.AddrPort // client → its current mapping
	toClient map[netip.AddrPort]netip.AddrPort // current mapping → client
	mapIP    netip.Addr
	mapPort  uint16
	closed   bool
	group    *MultiPath // if set, the group owns the fronts and moves the server
}

var _ trace.Target = (*Path)(nil)

// flight is a datagram in a path's link.
type flight struct {
	from, to netip.AddrPort // for Up, from is the client, to is unused
	data     []byte
}

// NewPath puts a path in front of the server at addr. Its first
// ServerAddr and mappings come from 198.18.0.0/15 and 100.64.0.0/10.
// Its random decisions depend on the network's seed and on how many
// paths were made before it.
func (n *Network) NewPath(server netip.AddrPort, cfg PathConfig) (*Path, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrNetworkClosed
	}
	p := n.newPathLocked(server, cfg)
	p.front = p.newFrontLocked(server.Port())
	return p, nil
}

// newPathLocked makes a path without a front; n.mu is held.
func (n *Network) newPathLocked(server netip.AddrPort, cfg PathConfig) *Path {
	p := &Path{
		nw:       n,
		server:   unmap(server),
		fronts:   map[netip.AddrPort]bool{},
		toMapped: map[netip.AddrPort]netip.AddrPort{},
		toClient: map[netip.AddrPort]netip.AddrPort{},
		mapIP:    nextAddr(mappingBlock, &n.maps),
		mapPort:  firstMapPort,
	}
	p.init(cfg, n.seed+uint64(len(n.paths))<<32)
	p.remap = p.forget
	for _, dir := range []Dir{Up, Down} {
		deliver := p.deliverDown
		if dir == Up {
			deliver = p.deliverUp
		}
		p.sched[dir] = newSched(deliver, func(f flight, why DropReason) {
			p.drop(time.Now(), dir, len(f.data), why)
		})
		p.flush[dir] = p.sched[dir].flush
	}
	n.paths = append(n.paths, p)
	return p
}

// newFrontLocked draws a server address; n.mu is held.
func (p *Path) newFrontLocked(port uint16) netip.AddrPort {
	a := p.nw.newFrontLocked(port, p)
	p.fronts[a] = true
	return a
}

// newFrontLocked draws a free server address and routes it to r; n.mu is
// held.
func (n *Network) newFrontLocked(port uint16, r router) netip.AddrPort {
	for {
		a := netip.AddrPortFrom(nextAddr(frontBlock, &n.fronts), port)
		if !n.taken(a) {
			n.routes[a] = r
			return a
		}
	}
}

// ServerAddr returns the server's address as clients see it: where they
// send.
func (p *Path) ServerAddr() netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.front
}

// Server returns the server's own address, where the path delivers.
func (p *Path) Server() netip.AddrPort { return p.server }

// Mapping returns the address at which the server currently sees the
// client at addr, if the client has one.
func (p *Path) Mapping(client netip.AddrPort) (netip.AddrPort, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.toMapped[unmap(client)]
	return m, ok
}

// forget clears every mapping; the next ones are on a new address if
// newAddr. It is the shaper's remap.
func (p *Path) forget(newAddr bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.toMapped)
	clear(p.toClient)
	if newAddr {
		p.nw.mu.Lock()
		p.mapIP = nextAddr(mappingBlock, &p.nw.maps)
		p.nw.mu.Unlock()
		p.mapPort = firstMapPort
	}
}

// MoveServer gives the server a new ServerAddr. Datagrams sent to the old
// one are dropped from now on; the server's replies come from the new one.
// It never fails; the error is there for trace.Target. The server of a
// MultiPath has one address on every path, so a member's MoveServer moves
// the whole group's.
func (p *Path) MoveServer() error {
	if p.group != nil {
		return p.group.MoveServer()
	}
	p.mu.Lock()
	old := p.front
	p.nw.mu.Lock()
	p.front = p.newFrontLocked(old.Port())
	p.nw.mu.Unlock()
	moved := p.front
	p.mu.Unlock()
	p.emit(Event{Time: time.Now(), Kind: EventServerMove, Old: old, New: moved})
	return nil
}

// Close drops what is in flight and releases the path's addresses.
func (p *Path) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	for _, s := range p.sched {
		s.close()
	}
	p.nw.mu.Lock()
	for a, r := range p.nw.routes {
		if r == router(p) {
			delete(p.nw.routes, a)
		}
	}
	p.nw.mu.Unlock()
	return nil
}

// receive takes a datagram the network routed to one of the path's
// addresses.
func (p *Path) receive(from, to netip.AddrPort, data []byte) {
	now := time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	front := p.front
	client, mapped := p.toClient[to]
	wasFront := p.fronts[to]
	p.mu.Unlock()

	var dir Dir
	var f flight
	switch {
	case to == front:
		dir, f = Up, flight{from: from, data: data}
	case mapped && from == p.server:
		dir, f = Down, flight{from: front, to: client, data: data}
	case mapped:
		p.drop(now, Down, len(data), DropFiltered)
		return
	case wasFront:
		p.drop(now, Up, len(data), DropStale)
		return
	default:
		p.drop(now, Down, len(data), DropStale)
		return
	}
	at, ok := p.offer(now, dir, from, to, data)
	if ok && p.sched[dir].submit(now, at, f) {
		p.sched[dir].deliver(f)
	}
}

// deliverUp hands a client's datagram to the server from the client's
// mapping, which the NAT makes now, at the link's exit, if the client has
// none.
func (p *Path) deliverUp(f flight) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	m, ok := p.toMapped[f.from]
	if !ok {
		p.nw.mu.Lock()
		for {
			m = netip.AddrPortFrom(p.mapIP, p.mapPort)
			if p.mapPort++; p.mapPort == 0 {
				p.mapPort = firstMapPort
			}
			if !p.nw.taken(m) {
				break
			}
		}
		p.nw.routes[m] = p
		p.nw.mu.Unlock()
		p.toMapped[f.from], p.toClient[m] = m, f.from
	}
	p.mu.Unlock()
	if !ok {
		p.emit(Event{Time: time.Now(), Kind: EventMapping, Old: f.from, New: m})
	}
	p.nw.send(m, p.server, f.data)
}

func (p *Path) deliverDown(f flight) { p.nw.send(f.from, f.to, f.data) }
