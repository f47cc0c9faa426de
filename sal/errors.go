package sal

import (
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/roamnet/roam/resolve"
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
	// ErrLimit: the peer's Host refused a flow or connection that would
	// go over one of its limits; a *LimitError says which.
	ErrLimit = errors.New("sal: over the peer's limit")
	// ErrStalled: the peer read the flow's data but acknowledged none of
	// it for Config.StallTimeout while its connection was alive; the flow
	// was reset (the error also wraps ErrFlowLost).
	ErrStalled = errors.New("sal: peer stopped acknowledging")
	// ErrBadNetwork: DialContext was given a network it does not serve.
	ErrBadNetwork = errors.New("sal: unsupported network")
	// ErrPathExists: AddPath was given an address the Host already uses.
	ErrPathExists = errors.New("sal: path already in use")
	// ErrBadKeyFile: LoadKey found a file that holds no usable private key.
	ErrBadKeyFile = errors.New("sal: not a key file")
	// ErrInvalidServiceID: a service ID did not parse. The error is then a
	// *ServiceIDError, which says where and why.
	ErrInvalidServiceID = errors.New("sal: invalid service ID")
	// ErrDropped: the service table drops the service (ActionDrop).
	ErrDropped = errors.New("sal: service dropped by rule")
	// ErrInvalidRule: ServiceTable.Set was given a malformed rule. When
	// the service is at fault the error also wraps a *ServiceIDError.
	ErrInvalidRule = errors.New("sal: invalid rule")
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

// Error says each thing once, as net.OpError does ("dial tcp: lookup
// x: no such host"): the service and the endpoint are left out when the
// cause names them already (a resolver's *resolve.Error for the same
// name, a *ServiceIDError quoting it, an unreachable endpoint), and a
// cause's own "sal: " prefix is dropped after the "sal" that leads.
func (e *OpError) Error() string {
	s := "sal " + e.Op
	if e.Service != "" && !namesService(e.Err, e.Service) {
		s += " " + e.Service
	}
	if e.Endpoint.IsValid() && !namesEndpoint(e.Err, e.Endpoint) {
		s += " via " + e.Endpoint.String()
	}
	if e.Err != nil {
		s += ": " + strings.TrimPrefix(e.Err.Error(), "sal: ")
	}
	return s
}

// namesService reports whether err's text names service already.
func namesService(err error, service string) bool {
	if re := (*resolve.Error)(nil); errors.As(err, &re) && strings.EqualFold(re.Service, service) {
		return true
	}
	if ie := (*ServiceIDError)(nil); errors.As(err, &ie) {
		in, cut := strings.CutSuffix(ie.Input, "...")
		return ie.Input == service || cut && strings.HasPrefix(service, in)
	}
	return false
}

// namesEndpoint reports whether err's text names the endpoint already.
func namesEndpoint(err error, ep netip.AddrPort) bool {
	ue := (*unreachableError)(nil)
	return errors.As(err, &ue) && ue.addr == ep
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
