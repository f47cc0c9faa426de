package emu

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/roamnet/roam/mobility/trace"
)

// ErrBadRoute is wrapped by NewMultiPath's errors about its routes.
var ErrBadRoute = errors.New("emu: bad route")

// Route is one path of a MultiPath: what a client sends from the local
// address From takes a path configured by PathConfig.
type Route struct {
	From netip.Addr
	PathConfig
}

// MultiPath gives a client several independent paths to one server, as a
// device with a modem on each of two carriers has: the client sends to
// one ServerAddr from each of its local addresses, and what it sends from
// Route.From takes that route's Path, as policy routing by source address
// (ip rule from <src> table <n>) does. Each path has its own links, its
// own random source, its own mappings and so its own handovers; a trace
// played on one path leaves the others alone. The server sees the client
// at a different mapping on each path, and its replies go back the way
// the datagram came.
//
// A datagram from an address no route names takes the first route, as
// the main table's default route would. The server has one address on
// every path: MoveServer, on the group or on any of its paths, moves it
// for all of them.
type MultiPath struct {
	nw     *Network
	server netip.AddrPort
	paths  []*Path
	bySrc  map[netip.Addr]*Path // fixed once made

	mu    sync.Mutex
	front netip.AddrPort
}

// NewMultiPath puts one path per route in front of the server at addr.
// The routes' From addresses must be valid and distinct; errors about
// them wrap ErrBadRoute. The paths' random decisions depend on the
// network's seed and on how many paths were made before each.
func (n *Network) NewMultiPath(server netip.AddrPort, routes ...Route) (*MultiPath, error) {
	if len(routes) == 0 {
		return nil, fmt.Errorf("%w: no routes", ErrBadRoute)
	}
	m := &MultiPath{nw: n, server: unmap(server), bySrc: map[netip.Addr]*Path{}}
	for i, r := range routes {
		from := r.From.Unmap()
		if !from.IsValid() {
			return nil, fmt.Errorf("%w: route %d has no From address", ErrBadRoute, i)
		}
		if _, dup := m.bySrc[from]; dup {
			return nil, fmt.Errorf("%w: two routes from %v", ErrBadRoute, from)
		}
		m.bySrc[from] = nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrNetworkClosed
	}
	m.front = n.newFrontLocked(m.server.Port(), m)
	for _, r := range routes {
		p := n.newPathLocked(m.server, r.PathConfig)
		p.group, p.front, p.fronts[m.front] = m, m.front, true
		m.paths = append(m.paths, p)
		m.bySrc[r.From.Unmap()] = p
	}
	return m, nil
}

// ServerAddr returns the server's address as the client sees it on every
// path: where it sends.
func (m *MultiPath) ServerAddr() netip.AddrPort {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.front
}

// Server returns the server's own address, where the paths deliver.
func (m *MultiPath) Server() netip.AddrPort { return m.server }

// Paths returns the paths in the order of the routes. Each has the
// controls of a Path: Blackout, Handover, Rebind, Configure, SetLink,
// SetHook, Link, and trace.Play.
func (m *MultiPath) Paths() []*Path { return append([]*Path(nil), m.paths...) }

// Path returns the path that datagrams from the local address from take,
// or nil if no route names it.
func (m *MultiPath) Path(from netip.Addr) *Path { return m.bySrc[from.Unmap()] }

// Blackout drops everything on every path for d: a tunnel cuts every
// carrier at once.
func (m *MultiPath) Blackout(d time.Duration) {
	for _, p := range m.paths {
		p.Blackout(d)
	}
}

// MoveServer gives the server a new ServerAddr on every path. Datagrams
// sent to the old one are dropped with DropStale from now on, and each
// path records an EventServerMove. It never fails; the error is there for
// trace.Target.
func (m *MultiPath) MoveServer() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.front
	m.nw.mu.Lock()
	m.front = m.nw.newFrontLocked(old.Port(), m)
	m.nw.mu.Unlock()
	for _, p := range m.paths {
		p.mu.Lock()
		p.front, p.fronts[m.front] = m.front, true
		p.mu.Unlock()
		p.emit(Event{Time: time.Now(), Kind: EventServerMove, Old: old, New: m.front})
	}
	return nil
}

// Play plays trs[i] on the i-th path, all at once, counted from the call,
// and returns when every trace has ended, or at the first error, which
// stops the others. There must be a trace per path. Inside a
// testing/synctest bubble the traces play in virtual time.
func (m *MultiPath) Play(ctx context.Context, trs ...*trace.Trace) error {
	if len(trs) != len(m.paths) {
		return fmt.Errorf("emu: %d traces for %d paths", len(trs), len(m.paths))
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for i, tr := range trs {
		wg.Go(func() {
			if err := trace.Play(ctx, tr, m.paths[i]); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// Close closes every path and releases the server's addresses.
func (m *MultiPath) Close() error {
	for _, p := range m.paths {
		p.Close()
	}
	m.nw.mu.Lock()
	for a, r := range m.nw.routes {
		if r == router(m) {
			delete(m.nw.routes, a)
		}
	}
	m.nw.mu.Unlock()
	return nil
}

// receive hands a datagram sent to one of the group's fronts to the path
// of its source address.
func (m *MultiPath) receive(from, to netip.AddrPort, data []byte) {
	p := m.bySrc[from.Addr()]
	if p == nil {
		p = m.paths[0]
	}
	p.receive(from, to, data)
}
