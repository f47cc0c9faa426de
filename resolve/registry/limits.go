package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/shrink"
)

// The registry listens on the internet, where any peer may be hostile.
// Everything one peer can make it hold is bounded: handshakes in progress,
// connections (in all and per address), leases (in all, per key and per
// connection), endpoints per service, watches (in all and per connection),
// and the names it keeps bound after their last lease. What goes over a
// limit is refused with a resolve.LimitError that the peer reads (a CodeLimit
// answer, or a connection closed with codeRegistryLimit and the limit in
// its reason) and counted in Stats.Limits, never silently.
//
// Lock order: Server.mu, then resolve.Memory's, then resolve.Health's, then
// registryConn.mu and watchPusher.mu, then peerLimits.mu. No network I/O
// happens under any of them.

// limitReason is how the registry names a limit on the wire, in a CodeLimit
// answer's message and in the reason of a connection it closes: "limit 256
// leases per key". Clients that predate resolve.LimitError show it as it is.
func limitReason(e *resolve.LimitError) string { return fmt.Sprintf("limit %d %s", e.Max, e.Limit) }

// parseLimitReason reads limitReason's text back; ok is false for any
// other text.
func parseLimitReason(s string) (e *resolve.LimitError, ok bool) {
	rest, ok := strings.CutPrefix(s, "limit ")
	if !ok {
		return nil, false
	}
	num, name, ok := strings.Cut(rest, " ")
	var max int
	if _, err := fmt.Sscan(num, &max); err != nil || !ok || name == "" {
		return nil, false
	}
	return &resolve.LimitError{Limit: resolve.Limit(name), Max: max}, true
}

// LimitStats counts what a registry refused to keep its limits,
// since it started.
type LimitStats struct {
	// HandshakesRefused counts QUIC handshakes refused (CONNECTION_REFUSED)
	// because MaxHandshakes were in progress; Retries counts the Initials
	// answered with a Retry instead of a handshake, because RetryThreshold
	// were in progress or their address had MaxConnsPerAddr connections.
	HandshakesRefused, Retries uint64
	// ConnsRefused counts connections closed at once over MaxConns;
	// ConnsRefusedAddr those over MaxConnsPerAddr, closed at once or, for
	// an address a Retry proved, refused before their handshake.
	ConnsRefused, ConnsRefusedAddr uint64
	// LeasesRefused, LeasesRefusedKey, LeasesRefusedConn and
	// EndpointsRefused count registrations refused over MaxLeases,
	// MaxLeasesPerKey, MaxLeasesPerConn and MaxEndpoints.
	LeasesRefused, LeasesRefusedKey, LeasesRefusedConn, EndpointsRefused uint64
	// WatchesRefused and WatchesRefusedConn count watches refused over
	// MaxWatches and MaxWatchesPerConn.
	WatchesRefused, WatchesRefusedConn uint64
	// NamesReleasedEarly counts names whose binding to their key lapsed
	// before BindingTTL because MaxHeldNames were held.
	NamesReleasedEarly uint64
}

// limitCounters are LimitStats as they are counted.
type limitCounters struct {
	handshakesRefused, retries                                           atomic.Uint64
	connsRefused, connsRefusedAddr                                       atomic.Uint64
	leasesRefused, leasesRefusedKey, leasesRefusedConn, endpointsRefused atomic.Uint64
	watchesRefused, watchesRefusedConn                                   atomic.Uint64
	namesReleasedEarly                                                   atomic.Uint64
}

func (c *limitCounters) stats() LimitStats {
	return LimitStats{
		HandshakesRefused:  c.handshakesRefused.Load(),
		Retries:            c.retries.Load(),
		ConnsRefused:       c.connsRefused.Load(),
		ConnsRefusedAddr:   c.connsRefusedAddr.Load(),
		LeasesRefused:      c.leasesRefused.Load(),
		LeasesRefusedKey:   c.leasesRefusedKey.Load(),
		LeasesRefusedConn:  c.leasesRefusedConn.Load(),
		EndpointsRefused:   c.endpointsRefused.Load(),
		WatchesRefused:     c.watchesRefused.Load(),
		WatchesRefusedConn: c.watchesRefusedConn.Load(),
		NamesReleasedEarly: c.namesReleasedEarly.Load(),
	}
}

// count adds one refusal of e's kind.
func (c *limitCounters) count(e *resolve.LimitError) {
	switch e.Limit {
	case resolve.LimitConns:
		c.connsRefused.Add(1)
	case resolve.LimitConnsPerAddr:
		c.connsRefusedAddr.Add(1)
	case resolve.LimitHandshakes:
		c.handshakesRefused.Add(1)
	case resolve.LimitLeases:
		c.leasesRefused.Add(1)
	case resolve.LimitLeasesPerKey:
		c.leasesRefusedKey.Add(1)
	case resolve.LimitLeasesPerConn:
		c.leasesRefusedConn.Add(1)
	case resolve.LimitEndpoints:
		c.endpointsRefused.Add(1)
	case resolve.LimitWatches:
		c.watchesRefused.Add(1)
	case resolve.LimitWatchesPerConn:
		c.watchesRefusedConn.Add(1)
	}
}

// addrScope is what "one address" means for the per-address limits: the
// IPv4 address, or the /64 of an IPv6 one, which one host commonly holds
// whole.
func addrScope(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func udpAddrScope(a net.Addr) netip.Addr {
	if u, ok := a.(*net.UDPAddr); ok {
		return addrScope(u.AddrPort().Addr())
	}
	return netip.Addr{}
}

// peerLimits counts, per address, the connections and the handshakes of
// proven addresses, and the handshakes in progress in all.
type peerLimits struct {
	handshakes atomic.Int64

	mu                    sync.Mutex
	conns                 map[netip.Addr]int
	proven                map[netip.Addr]int // handshakes of addresses a Retry proved
	connsPeak, provenPeak int                // for shrink.Delete
}

// handshakeDone is the context key of the function that takes a
// connection off the handshakes in progress.
type handshakeDone struct{}

// connContext admits a new connection's handshake. quic-go calls it for
// every Initial that passed the Retry check, and refuses the connection
// (CONNECTION_REFUSED) when it returns an error.
func (r *Server) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	p := &r.peers
	if p.handshakes.Add(1) > int64(r.cfg.MaxHandshakes) {
		p.handshakes.Add(-1)
		r.limits.handshakesRefused.Add(1)
		return nil, errHandshakes
	}
	// An address a Retry proved cannot be spoofed, so it can be held to
	// MaxConnsPerAddr before its handshake costs anything; an unproven
	// one could be anybody's, and is only counted in all.
	var scope netip.Addr
	if info.AddrVerified {
		scope = udpAddrScope(info.RemoteAddr)
		p.mu.Lock()
		if p.conns[scope]+p.proven[scope] >= r.cfg.MaxConnsPerAddr {
			p.mu.Unlock()
			p.handshakes.Add(-1)
			r.limits.connsRefusedAddr.Add(1)
			return nil, errHandshakes
		}
		p.proven[scope]++
		p.mu.Unlock()
	}
	var once sync.Once
	done := func() {
		once.Do(func() {
			p.handshakes.Add(-1)
			if scope.IsValid() {
				p.mu.Lock()
				if p.proven[scope]--; p.proven[scope] <= 0 {
					shrink.Delete(&p.proven, scope, &p.provenPeak)
				}
				p.mu.Unlock()
			}
		})
	}
	// A handshake that fails ends the connection's context; one that
	// succeeds is taken off when the registry accepts the connection.
	context.AfterFunc(ctx, done)
	return context.WithValue(ctx, handshakeDone{}, done), nil
}

var errHandshakes = errors.New("resolve: registry: too many handshakes in progress")

// handshaken takes an accepted connection off the handshakes in progress.
func handshaken(qc *quic.Conn) {
	if done, ok := qc.Context().Value(handshakeDone{}).(func()); ok {
		done()
	}
}

// verifySourceAddress asks for a Retry, which proves the client's address
// at the cost of one round trip: once RetryThreshold handshakes are in
// progress, so that spoofed Initials cost the registry no state at all;
// and from an address that holds MaxConnsPerAddr connections already, so
// that connContext can refuse it before its handshake costs anything (one
// peer dialing without end took 85% of the registry's throughput, in
// handshakes closed at once). A spoofer who names someone else's address
// costs that address one round trip, no more.
func (r *Server) verifySourceAddress(addr net.Addr) bool {
	retry := r.cfg.RetryThreshold < 0 || r.peers.handshakes.Load() >= int64(r.cfg.RetryThreshold)
	if !retry {
		scope := udpAddrScope(addr)
		p := &r.peers
		p.mu.Lock()
		retry = p.conns[scope]+p.proven[scope] >= r.cfg.MaxConnsPerAddr
		p.mu.Unlock()
	}
	if retry {
		r.limits.retries.Add(1)
	}
	return retry
}

// admitConn counts an accepted connection against MaxConns and
// MaxConnsPerAddr; over either it returns the resolve.LimitError to close
// it with, and counts nothing. r.mu must be held.
func (r *Server) admitConnLocked(scope netip.Addr) *resolve.LimitError {
	if len(r.conns) >= r.cfg.MaxConns {
		return &resolve.LimitError{Limit: resolve.LimitConns, Max: r.cfg.MaxConns}
	}
	p := &r.peers
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns[scope] >= r.cfg.MaxConnsPerAddr {
		return &resolve.LimitError{Limit: resolve.LimitConnsPerAddr, Max: r.cfg.MaxConnsPerAddr}
	}
	p.conns[scope]++
	return nil
}

// leaveConn undoes admitConnLocked when the connection has ended.
func (r *Server) leaveConn(scope netip.Addr) {
	p := &r.peers
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns[scope]--; p.conns[scope] <= 0 {
		shrink.Delete(&p.conns, scope, &p.connsPeak)
	}
}

// limitFromClose turns a connection that the registry closed or refused over
// a limit back into the resolve.LimitError, wrapping the QUIC error; other
// errors pass unchanged.
func limitFromClose(err error) error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == codeRegistryLimit {
		e, ok := parseLimitReason(ae.ErrorMessage)
		if !ok {
			e = &resolve.LimitError{Limit: resolve.Limit(ae.ErrorMessage)}
		}
		return fmt.Errorf("%w: %w", e, err)
	}
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote && te.ErrorCode == quic.ConnectionRefused {
		return fmt.Errorf("%w: %w", &resolve.LimitError{Limit: resolve.LimitHandshakes}, err)
	}
	return err
}
