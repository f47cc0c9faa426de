package sal

import (
	"net"
	"net/netip"
	"strconv"
)

// Addr is the address of one end of a flow: a service ID, and the UDP
// endpoint that carries it.
//
// For the end that listens, Service is the service the flow was opened to.
// For the end that dials, Service is the self-certifying, key-only ID of
// its Host (rk--<fingerprint>), the only name a dialer has.
type Addr struct {
	Service  ServiceID
	Endpoint netip.AddrPort
}

// Network returns "sal", which Host.DialContext accepts.
func (a Addr) Network() string { return "sal" }

// String returns "service:port": the service ID and the UDP port of the
// endpoint that carries the flow now (0 if none), as in "echo.demo:7000"
// or "rk--<fingerprint>:51234". It is a host:port that net.SplitHostPort,
// net/http's Request.RemoteAddr users and loggers parse: the host names
// the peer (a service ID never holds a colon), the port says where it is
// reached now, and may change when the flow moves. Host.DialContext takes
// the string back and dials the service, ignoring the port.
func (a Addr) String() string {
	return net.JoinHostPort(a.Service.String(), strconv.Itoa(int(a.Endpoint.Port())))
}

var _ net.Addr = Addr{}
