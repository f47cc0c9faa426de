package sal

import (
	"context"
	"errors"
	"expvar"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
)

// A Host listens on the internet, where any peer may be hostile. Each
// thing one peer can make it hold is bounded: flows per connection,
// connections per key and per address, handshakes in progress, and the
// memory its flows keep for replay (see budget). What goes over a limit is
// refused with a typed error the peer can read (a LimitError) and counted
// in the Host's LimitStats, never silently.
//
// Lock order: limiter.mu, then a session's mu (leastUsed looks at each
// connection's use); neither is held with Host.mu. Nothing here does
// network I/O under a lock.

// Limit names one of the bounds a Host keeps on what one peer may hold.
type Limit string

// The limits a Host enforces. Config has a field for each.
const (
	LimitFlowsPerConn Limit = "flows per connection"    // Config.MaxFlowsPerConn
	LimitConnsPerAddr Limit = "connections per address" // Config.MaxConnsPerAddr
	LimitHandshakes   Limit = "handshakes in progress"  // Config.MaxHandshakes
)

// LimitError reports a flow or connection refused because it would take
// its peer (or all peers, for handshakes) over one of the Host's limits. A
// dialer gets it from the listening Host; errors.Is(err, ErrLimit) holds.
type LimitError struct {
	Limit Limit
	Max   int // the limit's value, when the refusing Host said
}

func (e *LimitError) Error() string {
	if e.Max > 0 {
		return fmt.Sprintf("%s: %s (at most %d)", ErrLimit.Error(), e.Limit, e.Max)
	}
	return ErrLimit.Error() + ": " + string(e.Limit)
}

// Is makes errors.Is(err, ErrLimit) hold.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// LimitStats counts what a Host refused or cut off to keep its limits,
// since it started. Every count only grows.
type LimitStats struct {
	// FlowsRefused counts flows refused because their connection had
	// MaxFlowsPerConn open already.
	FlowsRefused uint64 `json:"flows_refused"`
	// ConnsRefusedAddr counts connections closed at once because their
	// IP address held MaxConnsPerAddr already, each carrying flows.
	ConnsRefusedAddr uint64 `json:"conns_refused_addr"`
	// ConnsEvicted counts connections closed to make room for a newer one
	// of the same key (MaxConnsPerKey) or address (MaxConnsPerAddr): the
	// least used of the key's, or an idle one of the address's.
	ConnsEvicted uint64 `json:"conns_evicted"`
	// HandshakesRefused counts QUIC handshakes refused because
	// MaxHandshakes were in progress; Retries counts the Initials answered
	// with a Retry, because RetryThreshold were.
	HandshakesRefused uint64 `json:"handshakes_refused"`
	Retries           uint64 `json:"retries"`
	// FlowsStalled counts flows reset because the peer read their data
	// but acknowledged none of it for StallTimeout.
	FlowsStalled uint64 `json:"flows_stalled"`
	// ConnsIdleClosed counts connections peers dialed that carried no flow
	// for InboundIdleTimeout, closed by this Host.
	ConnsIdleClosed uint64 `json:"conns_idle_closed"`
	// BufferWaits counts the times a Write had to wait because its
	// connection's share of HostBuffer was used up.
	BufferWaits uint64 `json:"buffer_waits"`
	// BacklogRefused counts flows refused with ErrBusy because their
	// connection already held an eighth of their Listener's Backlog.
	BacklogRefused uint64 `json:"backlog_refused"`
}

// limiter keeps the counts the limits are checked against.
type limiter struct {
	handshakes atomic.Int64 // in progress

	mu     sync.Mutex
	byKey  connIndex[resolve.Fingerprint] // connections peers dialed, by their key
	byAddr connIndex[netip.Addr]          // and by their IP address

	flowsRefused, connsRefusedAddr             atomic.Uint64
	handshakesRefused, retries, flowsStalled   atomic.Uint64
	connsIdleClosed, bufferWaits, connsEvicted atomic.Uint64
	backlogRefused                             atomic.Uint64
}

func (l *limiter) stats() LimitStats {
	return LimitStats{
		FlowsRefused:      l.flowsRefused.Load(),
		ConnsRefusedAddr:  l.connsRefusedAddr.Load(),
		HandshakesRefused: l.handshakesRefused.Load(),
		Retries:           l.retries.Load(),
		FlowsStalled:      l.flowsStalled.Load(),
		ConnsIdleClosed:   l.connsIdleClosed.Load(),
		BufferWaits:       l.bufferWaits.Load(),
		ConnsEvicted:      l.connsEvicted.Load(),
		BacklogRefused:    l.backlogRefused.Load(),
	}
}

// LimitStats returns what the Host refused to keep its limits.
func (h *Host) LimitStats() LimitStats { return h.limits.stats() }

// handshakeDone is the key of the function, in a handshaking connection's
// context, that takes it off the handshakes in progress.
type handshakeDone struct{}

// errHandshakes refuses a handshake; quic-go answers CONNECTION_REFUSED.
var errHandshakes = errors.New("sal: too many handshakes in progress")

// connContext admits a new connection's handshake, within MaxHandshakes;
// quic-go calls it for every Initial that passed the Retry check.
func (h *Host) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	if h.limits.handshakes.Add(1) > int64(h.cfg.maxHandshakes()) {
		h.limits.handshakes.Add(-1)
		h.limits.handshakesRefused.Add(1)
		return nil, errHandshakes
	}
	var once sync.Once
	done := func() { once.Do(func() { h.limits.handshakes.Add(-1) }) }
	// A handshake that fails ends its connection's context; one that
	// succeeds is taken off when the Host accepts the connection.
	context.AfterFunc(ctx, done)
	return context.WithValue(ctx, handshakeDone{}, done), nil
}

// handshaken takes an accepted connection off the handshakes in progress.
func handshaken(qc *quic.Conn) {
	if done, ok := qc.Context().Value(handshakeDone{}).(func()); ok {
		done()
	}
}

// verifySourceAddress asks for a Retry, which proves the source address
// at the cost of one round trip, once RetryThreshold handshakes are in
// progress: then spoofed Initials cost the Host no state at all.
func (h *Host) verifySourceAddress(net.Addr) bool {
	if h.limits.handshakes.Load() < int64(h.cfg.retryThreshold()) {
		return false
	}
	h.limits.retries.Add(1)
	return true
}

// newQUICTransport makes the quic.Transport of one of the Host's sockets,
// with its handshake limits.
func (h *Host) newQUICTransport(pc net.PacketConn) *quic.Transport {
	return &quic.Transport{
		Conn:                pc,
		ConnContext:         h.connContext,
		VerifySourceAddress: h.verifySourceAddress,
	}
}

// admitConn counts sess, a connection a peer dialed, against
// MaxConnsPerKey and MaxConnsPerAddr. It returns the connections to close
// to make room, and a LimitError if there is none to close, in which case
// sess is not counted and must be closed with it.
//
// A key over its limit loses its least used connection: the same peer
// holds them all, and one that moved (the server's address changed under
// a NAT, say) leaves its old connections behind until their idle timeout.
// Its flows, if any, resume on the others (it closes with codeMoved). An
// address over its limit loses a connection that carries no flow, the one
// idle longest; when every one carries flows, the new one is refused, as
// the others may belong to other peers behind the same NAT.
func (h *Host) admitConn(sess *session, addr netip.Addr) (evict []*session, refused *LimitError) {
	l := &h.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byKey == nil {
		l.byKey = make(map[resolve.Fingerprint]connSet)
		l.byAddr = make(map[netip.Addr]connSet)
	}
	if max := h.cfg.maxConnsPerAddr(); len(l.byAddr[addr]) >= max {
		victim := leastUsed(l.byAddr[addr], false)
		if victim == nil {
			l.connsRefusedAddr.Add(1)
			return nil, &LimitError{Limit: LimitConnsPerAddr, Max: max}
		}
		l.connsEvicted.Add(1)
		l.forgetLocked(victim)
		evict = append(evict, victim)
	}
	if max := h.cfg.maxConnsPerKey(); len(l.byKey[sess.peerKey]) >= max {
		victim := leastUsed(l.byKey[sess.peerKey], true)
		l.connsEvicted.Add(1)
		l.forgetLocked(victim)
		evict = append(evict, victim)
	}
	sess.addr = addr
	l.byKey.add(sess.peerKey, sess)
	l.byAddr.add(addr, sess)
	return evict, nil
}

// leaveConn uncounts a connection admitConn counted, once it has ended.
func (h *Host) leaveConn(sess *session) {
	h.limits.mu.Lock()
	h.limits.forgetLocked(sess)
	h.limits.mu.Unlock()
}

func (l *limiter) forgetLocked(sess *session) {
	l.byKey.remove(sess.peerKey, sess)
	l.byAddr.remove(sess.addr, sess)
}

// connSet holds the connections of one key or address.
type connSet = map[*session]struct{}

type connIndex[K comparable] map[K]connSet

func (x connIndex[K]) add(k K, sess *session) {
	if x[k] == nil {
		x[k] = make(connSet)
	}
	x[k][sess] = struct{}{}
}

func (x connIndex[K]) remove(k K, sess *session) {
	if set := x[k]; set != nil {
		delete(set, sess)
		if len(set) == 0 {
			delete(x, k)
		}
	}
}

// leastUsed picks the connection to give up: one carrying nothing, idle
// longest; failing that, if busyToo, the one that carries fewest flows.
func leastUsed(set connSet, busyToo bool) *session {
	var best *session
	var bestIdle time.Time
	bestLoad := -1
	for sess := range set {
		load, idleSince := sess.usage()
		switch {
		case load == 0 && (best == nil || bestLoad > 0 || idleSince.Before(bestIdle)):
			best, bestLoad, bestIdle = sess, 0, idleSince
		case load > 0 && busyToo && (best == nil || bestLoad > load):
			best, bestLoad = sess, load
		}
	}
	return best
}

// limitReason is how a connection closed over a limit says which one: the
// close's reason phrase, which a dialer turns back into a LimitError.
func limitReason(e *LimitError) string { return fmt.Sprintf("limit %d %s", e.Max, e.Limit) }

// limitFromClose turns a connection closed by the peer over one of its
// limits back into the LimitError; other errors pass unchanged.
func limitFromClose(err error) error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == codeLimit {
		e := &LimitError{}
		var rest string
		if _, scanErr := fmt.Sscanf(ae.ErrorMessage, "limit %d", &e.Max); scanErr == nil {
			_, rest, _ = strings.Cut(strings.TrimPrefix(ae.ErrorMessage, "limit "), " ")
		}
		e.Limit = Limit(rest)
		return fmt.Errorf("%w: %w", e, err)
	}
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote && te.ErrorCode == quic.ConnectionRefused {
		return fmt.Errorf("%w: %w", &LimitError{Limit: LimitHandshakes}, err)
	}
	return err
}

// roamLimitVars is the expvar.Map "roam_limits": one entry per live Host,
// under the name it has in "roam", each its LimitStats as JSON.
var roamLimitVars = expvar.NewMap("roam_limits")
