package sal

// Several local paths. A Host may have further local addresses besides
// ListenAddr's (Config.Paths, AddPath, or every usable address a Monitor
// reports), each a path with its own socket. For every peer it dials, the
// Host keeps a validated connection on each path: one carries the flows,
// the others stand by, warm (their own RTT estimate, congestion window and
// MTU, which a QUIC migration would reset). A watcher on each connection
// tells within about a PTO that its path stopped answering; the flows it
// carries then resume at once on a connection of a live path: their
// unacknowledged bytes go out there with no handshake and no path probe,
// and each end puts what it receives in order by offset, so nothing is
// lost, duplicated or reordered.
//
// Only the dialing end has paths to choose from: a listening Host accepts
// on ListenAddr's socket, and the dialer moves the flows.
//
// The Host's paths and its path connections are guarded by Host.mu (see
// the lock order in flow.go).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/resolve"
)

// PathState says whether a path works, as far as its connections tell.
type PathState uint8

// Path states.
const (
	PathIdle PathState = iota + 1 // no connection uses it yet
	PathUp                        // its connections answer
	PathDown                      // its connections went unanswered for about a PTO
)

func (s PathState) String() string {
	switch s {
	case PathIdle:
		return "idle"
	case PathUp:
		return "up"
	case PathDown:
		return "down"
	}
	return "unknown"
}

// PathPolicy says how a Host with several paths places its flows.
type PathPolicy uint8

// Path policies.
const (
	// PathStandby, the default, carries every flow on the first path that
	// works, in the order Paths lists them (ListenAddr's first); the others
	// stand by with validated, warm connections and take the flows over
	// when it fails. Flows stay where they are once it recovers: moving
	// back would cost a replay for nothing.
	PathStandby PathPolicy = iota
	// PathSpread places each new flow, and each flow that must move, on
	// the working path with the least smoothed RTT weighted by the flows
	// it carries, as MPTCP's default scheduler spreads a connection's
	// packets by RTT: many flows then use every path at once.
	PathSpread
	// PathAggregate carries each flow over every working path at once:
	// its bytes go in chunks to a stream on each path, as fast as that
	// path's congestion control lets them out, and the receiver puts them
	// in order, as an MPTCP connection uses its subflows. A flow then has
	// the bandwidth of all the paths; a path that fails moves the flow,
	// with the bytes it owes, onto the others, and a path that comes back
	// joins again. Both ends need a roam with stripes (a listener without
	// them fails such a flow with ErrProtocol).
	PathAggregate
)

func (p PathPolicy) String() string {
	switch p {
	case PathStandby:
		return "standby"
	case PathSpread:
		return "spread"
	case PathAggregate:
		return "aggregate"
	}
	return "unknown"
}

// PathInfo describes one of a Host's paths.
type PathInfo struct {
	Local       netip.AddrPort // the path's socket
	State       PathState
	SmoothedRTT time.Duration // the least smoothed RTT of its connections; 0 with none
	// BytesSent and BytesReceived count the QUIC bytes (retransmissions
	// included, UDP headers not) of every connection the Host dialed on
	// the path, closed ones included.
	BytesSent, BytesReceived uint64
	Conns                    int // connections the Host dialed on it that are open now
	Flows                    int // flows it carries now
}

// path is one of the Host's local paths.
type path struct {
	t       *transport // nil for ListenAddr's path, whose socket is Host.cur (Rebind replaces it)
	given   string     // the address AddPath was given
	auto    bool       // added for an address the Monitor reported
	removed bool       // guarded by Host.mu

	// Bytes of the path's connections that have closed (see closedConn).
	sentClosed, recvClosed atomic.Uint64
}

// pathPeer names a connection on a further path: the path and the peer's
// address.
type pathPeer struct {
	path *path
	addr netip.AddrPort
}

// multipathLocked reports whether the Host has further paths.
func (h *Host) multipathLocked() bool { return len(h.paths) > 0 }

// localOf is the local address of p's path. (quic-go's Conn.LocalAddr
// races with the connection's own path switch when it migrates.)
func (h *Host) localOf(p *peer) netip.AddrPort {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.transportOfLocked(p.path).local
}

// transportOfLocked is the socket a path's connections use.
func (h *Host) transportOfLocked(pt *path) *transport {
	if pt == nil || pt.t == nil {
		return h.cur
	}
	return pt.t
}

// AddPath opens a further local path at localAddr ("ip:0" or "ip:port")
// on its own socket, opened with Config.ListenPacket. From then on the
// Host keeps a connection on it to every peer it has dialed, ready to
// carry their flows. A bad address, one the Host already uses, or a socket
// that cannot be opened fails with an *OpError (wrapping ErrPathExists in
// the second case), and the existing paths are untouched.
func (h *Host) AddPath(ctx context.Context, localAddr string) error {
	return h.addPath(ctx, localAddr, false)
}

// addPath is AddPath; auto marks a path the Monitor's addresses gave,
// which goes when the address does (see syncPaths).
func (h *Host) addPath(ctx context.Context, localAddr string, auto bool) error {
	op := func(err error) error { return &OpError{Op: "add path", Service: localAddr, Err: err} }
	want, err := parsePathAddr(localAddr)
	if err != nil {
		return op(err)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return op(net.ErrClosed)
	}
	if h.hasPathLocked(want) {
		h.mu.Unlock()
		return op(ErrPathExists)
	}
	h.mu.Unlock()

	t, err := h.openTransport(ctx, localAddr)
	if err != nil {
		return op(err)
	}
	pt := &path{t: t, given: localAddr, auto: auto}
	local := t.local
	h.mu.Lock()
	if h.closed || h.hasPathLocked(local) {
		closed := h.closed
		h.mu.Unlock()
		pt.t.close()
		if closed {
			return op(net.ErrClosed)
		}
		return op(ErrPathExists)
	}
	h.paths = append(h.paths, pt)
	var peers []*peer
	for _, p := range h.peers {
		if p.sess != nil && !p.gone {
			peers = append(peers, p)
		}
	}
	h.mu.Unlock()
	h.log.Debug("path added", "local", local)
	// Every peer gets a connection on the new path, and every
	// connection a watcher that tells when its path fails.
	for _, p := range peers {
		h.watchPathOf(p)
		h.keepPaths(p.addr, p.sni, false)
	}
	return nil
}

// parsePathAddr checks a path's address: an IP and a port, "ip:0" for
// any port. The IP may be unspecified only with the port 0.
func parsePathAddr(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("path address %q is not ip:port: %w", s, err)
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("path address %q is not ip:port: %w", s, err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// hasPathLocked reports whether a path has the address a (a port of 0
// matches no socket: the kernel picks a free one).
func (h *Host) hasPathLocked(a netip.AddrPort) bool {
	if a.Port() == 0 {
		return false
	}
	if h.cur.local == a {
		return true
	}
	for _, pt := range h.paths {
		if pt.t.local == a {
			return true
		}
	}
	return false
}

// RemovePath closes a path AddPath or Config.Paths added, named by the
// address it was given or by its socket's address. The flows it carries
// resume at once on another path. ListenAddr's path cannot be removed
// (Rebind moves it).
func (h *Host) RemovePath(localAddr string) error {
	op := func(err error) error { return &OpError{Op: "remove path", Service: localAddr, Err: err} }
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return op(net.ErrClosed)
	}
	ap, _ := parsePathAddr(localAddr)
	i := slices.IndexFunc(h.paths, func(pt *path) bool { return pt.given == localAddr || ap.IsValid() && pt.t.local == ap })
	if i < 0 {
		primary := ap.IsValid() && (h.cur.local == ap || localAddr == h.cfg.ListenAddr)
		h.mu.Unlock()
		if primary {
			return op(errors.New("ListenAddr's path cannot be removed; Rebind moves it"))
		}
		return op(errors.New("no such path"))
	}
	pt := h.paths[i]
	h.paths = slices.Delete(h.paths, i, i+1)
	pt.removed = true
	var peers []*peer
	for k, p := range h.pathPeers {
		if k.path == pt {
			peers = append(peers, p)
		}
	}
	h.mu.Unlock()
	// Move the flows first, so that none waits for the close to tell it.
	for _, p := range peers {
		h.evacuate(p, errPathRemoved)
	}
	for _, p := range peers {
		if p.sess != nil {
			p.sess.qc.CloseWithError(codeMoved, "path removed")
		}
	}
	if !h.spawn(func() { pt.t.close() }) { // may wait for quic-go's teardown
		pt.t.close() // the Host closed meanwhile, without this path
	}
	h.log.Debug("path removed", "local", pt.t.local)
	return nil
}

var (
	errPathDown    = errors.New("sal: path stopped answering")
	errPathRemoved = errors.New("sal: path removed")
	errPathRefused = errors.New("sal: the kernel refused to send on the path (no route or address)")
)

// Paths describes every path of the Host, ListenAddr's first.
func (h *Host) Paths() []PathInfo {
	type conn struct {
		pt *path
		p  *peer
	}
	h.mu.Lock()
	all := append([]*path{nil}, h.paths...)
	primaryLocal := h.cur.local
	var conns []conn
	for _, p := range h.peers {
		if p.sess != nil && !p.gone {
			conns = append(conns, conn{nil, p})
		}
	}
	for k, p := range h.pathPeers {
		if p.sess != nil && !p.gone {
			conns = append(conns, conn{k.path, p})
		}
	}
	failing := make(map[*peer]bool, len(conns))
	for _, c := range conns {
		failing[c.p] = c.p.failing
	}
	h.mu.Unlock()

	infos := make([]PathInfo, len(all))
	for i, pt := range all {
		info := &infos[i]
		info.State = PathIdle
		if pt == nil {
			info.Local = primaryLocal
			info.BytesSent, info.BytesReceived = h.primaryClosed.sent.Load(), h.primaryClosed.recv.Load()
		} else {
			info.Local = pt.t.local
			info.BytesSent, info.BytesReceived = pt.sentClosed.Load(), pt.recvClosed.Load()
		}
		up, down := 0, 0
		for _, c := range conns {
			if c.pt != pt {
				continue
			}
			st := c.p.sess.qc.ConnectionStats()
			info.Conns++
			info.BytesSent += st.BytesSent
			info.BytesReceived += st.BytesReceived
			if info.SmoothedRTT == 0 || st.SmoothedRTT < info.SmoothedRTT {
				info.SmoothedRTT = st.SmoothedRTT
			}
			info.Flows += c.p.sess.flowCount()
			if failing[c.p] {
				down++
			} else {
				up++
			}
		}
		switch {
		case up > 0:
			info.State = PathUp
		case down > 0:
			info.State = PathDown
		}
	}
	return infos
}

// byteCounter keeps the bytes of closed connections on ListenAddr's path.
type byteCounter struct{ sent, recv atomic.Uint64 }

// closedConn adds the bytes of p's connection, which has closed, to its
// path's count.
func (h *Host) closedConn(p *peer) {
	st := p.sess.qc.ConnectionStats()
	if p.path == nil {
		h.primaryClosed.sent.Add(st.BytesSent)
		h.primaryClosed.recv.Add(st.BytesReceived)
		return
	}
	p.path.sentClosed.Add(st.BytesSent)
	p.path.recvClosed.Add(st.BytesReceived)
}

// candidatesLocked returns the live connections to addr, one per path,
// ListenAddr's first, and whether each is failing.
func (h *Host) candidatesLocked(addr netip.AddrPort) []*peer {
	var out []*peer
	usable := func(p *peer) bool {
		return p != nil && !p.gone && p.sess != nil && p.sess.qc.Context().Err() == nil
	}
	if p := h.peers[addr]; usable(p) {
		out = append(out, p)
	}
	for _, pt := range h.paths {
		if p := h.pathPeers[pathPeer{pt, addr}]; usable(p) {
			out = append(out, p)
		}
	}
	return out
}

// pickPath returns, with a reference taken, the connection to addr that
// the PathPolicy chooses among those whose path works, or nil when the
// Host has no further paths or none of them works (then getPeer goes on
// as with one path). avoid, if set, is left out: the connection a flow
// leaves.
func (h *Host) pickPath(addr netip.AddrPort, avoid *peer) *peer {
	h.mu.Lock()
	if !h.multipathLocked() && avoid == nil || h.closed {
		h.mu.Unlock()
		return nil
	}
	var ok []*peer
	for _, p := range h.candidatesLocked(addr) {
		if !p.failing && p != avoid {
			ok = append(ok, p)
		}
	}
	h.mu.Unlock()
	if len(ok) == 0 {
		return nil
	}
	best := ok[0]
	if h.cfg.PathPolicy == PathSpread && len(ok) > 1 {
		// RTT weighted by load, as MPTCP's default scheduler fills the
		// subflow with the least RTT first: outside h.mu, as quic-go
		// takes its own lock.
		cost := func(p *peer) time.Duration {
			return p.sess.qc.ConnectionStats().SmoothedRTT * time.Duration(1+p.sess.flowCount())
		}
		bestCost := cost(best)
		for _, p := range ok[1:] {
			if c := cost(p); c < bestCost {
				best, bestCost = p, c
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if best.gone || h.closed {
		return nil
	}
	best.holdLocked()
	return best
}

// keepPaths makes sure the Host has a connection to addr on every further
// path, and on ListenAddr's too if primary is set, dialing in the
// background those it lacks; a path whose dial failed is tried again after
// a backoff. sni is the service the first connection was dialed for.
func (h *Host) keepPaths(addr netip.AddrPort, sni string, primary bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.multipathLocked() || h.closed {
		return
	}
	now := time.Now()
	dial := func(pt *path) {
		k := pathPeer{pt, addr}
		if next, ok := h.pathRetry[k]; ok && now.Before(next.at) {
			return
		}
		p := &peer{host: h, addr: addr, sni: sni, path: pt, ready: make(chan struct{}), flows: 1}
		if pt == nil {
			h.peers[addr] = p
		} else {
			h.pathPeers[k] = p
		}
		h.wg.Go(func() {
			ctx, cancel := context.WithTimeout(h.ctx, h.cfg.endpointTimeout())
			defer cancel()
			h.dialPeer(ctx, p)
			h.mu.Lock()
			if p.err != nil {
				r := h.pathRetry[k]
				r.backoff = min(max(2*r.backoff, 100*time.Millisecond), 2*time.Second)
				r.at = time.Now().Add(r.backoff)
				h.pathRetry[k] = r
			} else {
				delete(h.pathRetry, k)
			}
			h.mu.Unlock()
			if p.err == nil {
				h.releasePeer(p) // a standby: it idles out with its siblings (see releasePeer)
			}
		})
	}
	if p := h.peers[addr]; primary && (p == nil || p.gone) {
		dial(nil)
	}
	for _, pt := range h.paths {
		if !sameFamily(h.transportOfLocked(pt).local.Addr(), addr.Addr()) {
			continue // an IPv6 path cannot reach an IPv4 peer
		}
		if p := h.pathPeers[pathPeer{pt, addr}]; p == nil || p.gone {
			dial(pt)
		}
	}
}

// pathRetry is when a path's connection to a peer may be dialed again.
type pathRetry struct {
	at      time.Time
	backoff time.Duration
}

func sameFamily(local, remote netip.Addr) bool {
	return local.IsUnspecified() && local.Is4() || local.Is4() == remote.Unmap().Is4()
}

// siblingsBusyLocked reports whether any connection to addr, on any path,
// carries flows: then the others stand by for them.
func (h *Host) siblingsBusyLocked(addr netip.AddrPort) bool {
	if p := h.peers[addr]; p != nil && !p.gone && p.flows > 0 {
		return true
	}
	for _, pt := range h.paths {
		if p := h.pathPeers[pathPeer{pt, addr}]; p != nil && !p.gone && p.flows > 0 {
			return true
		}
	}
	return false
}

// evacuate moves every flow p's connection carries to a connection of
// another path that works, if there is one: each resumes there at once,
// sending what the peer has not acknowledged. It reports whether some
// flow was left for want of such a path.
func (h *Host) evacuate(p *peer, cause error) (stranded bool) {
	if p.sess == nil {
		return false
	}
	flows := p.sess.flowList()
	if len(flows) == 0 {
		return false
	}
	alt := h.pickPath(p.addr, p)
	if alt == nil {
		return true
	}
	h.releasePeer(alt) // only a check: each flow's resume takes its own reference
	h.emit(Event{Kind: EventPathDown, From: h.localOf(p), To: p.addr, Err: cause})
	for _, c := range flows {
		c.mu.Lock()
		car := c.car
		move := car != nil && car.uses(p.sess) && c.state == flowActive && c.dialer
		if move {
			// The same peer, on the path pickPath gives: no lookup.
			c.moveTo = []resolve.Endpoint{{Addr: p.addr, Key: c.peerKey}}
		}
		c.mu.Unlock()
		if move {
			c.suspend(car, cause)
		}
	}
	return false
}
