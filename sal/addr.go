package sal

import (
	"net"
	"net/netip"
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

// Network returns "sal".
func (a Addr) Network() string { return "sal" }

// String returns the service ID.
func (a Addr) String() string { return a.Service.String() }

var _ net.Addr = Addr{}
