package sal

import (
	"errors"
	"net"
	"net/netip"
)

// Sentinel errors. Errors returned by this package wrap them; test with
// errors.Is. See the package documentation for the full list of targets.
var (
	// ErrNoListener: the reached Host does not listen on the service.
	ErrNoListener = errors.New("sal: no listener for service")
	// ErrRefused: the reached Host refused the flow.
	ErrRefused = errors.New("sal: flow refused by peer")
	// ErrBusy: the listener's accept queue is full.
	ErrBusy = errors.New("sal: listener busy")
	// ErrProtocol: the peer sent something that is not a SAL header.
	ErrProtocol = errors.New("sal: protocol violation")
	// ErrUnreachable: no endpoint of the service answered.
	ErrUnreachable = errors.New("sal: endpoint unreachable")
	// ErrKeyMismatch: the peer does not hold the key the service ID or
	// the resolver pins.
	ErrKeyMismatch = errors.New("sal: peer key does not match pinned key")
	// ErrUnauthenticated: Config.RequireAuthentication is set and nothing
	// pins a key for the service.
	ErrUnauthenticated = errors.New("sal: no key pinned for service")
	// ErrAlreadyListening: the Host already listens on the service.
	ErrAlreadyListening = errors.New("sal: already listening on service")
	// ErrNoResolver: Config.Resolver is nil and ROAM_RESOLVER is unset.
	ErrNoResolver = errors.New("sal: no resolver configured")
	// ErrFlowLost: the flow's carrier failed and it could not be resumed
	// within Config.ResumeTimeout, the peer refused the resume, or the
	// peer's Host shut down.
	ErrFlowLost = errors.New("sal: flow lost")
	// ErrPeerClosed: the peer closed the flow (or its reading side), so
	// what this end writes can no longer be delivered.
	ErrPeerClosed = errors.New("sal: peer closed the flow")
	// ErrBadNetwork: DialContext was given a network it does not serve.
	ErrBadNetwork = errors.New("sal: unsupported network")
)

// OpError is the error type returned by Host, Conn and Listener methods,
// in the manner of net.OpError. It implements net.Error, so deadline
// errors report Timeout() == true.
type OpError struct {
	Op       string         // "dial", "listen", "accept", "read", "write", "close"
	Service  string         // the service ID, as given or canonical
	Endpoint netip.AddrPort // the endpoint involved, if any
	Err      error
}

func (e *OpError) Error() string {
	s := "sal " + e.Op
	if e.Service != "" {
		s += " " + e.Service
	}
	if e.Endpoint.IsValid() {
		s += " via " + e.Endpoint.String()
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *OpError) Unwrap() error { return e.Err }

// Timeout reports whether the error is a timeout (a deadline or a context
// deadline that expired).
func (e *OpError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.Err, &t) && t.Timeout()
}

// Temporary is deprecated in net.Error; it reports Timeout for compatibility.
func (e *OpError) Temporary() bool { return e.Timeout() }

var _ net.Error = (*OpError)(nil)
