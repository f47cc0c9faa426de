// Package healthhook lets the registry (package resolve/registry) set what
// a resolve.Health keeps unexported: whom it charges the probes of an
// endpoint to. It is no public API: only packages under resolve can import
// it.
package healthhook

import "net/netip"

// ChargeTo makes the *resolve.Health h charge the probes of each endpoint
// to the address that registered it, as registrant names it, rather than
// to the key the endpoint pins: at a registry, fresh keys cost a peer
// nothing, its address does. registrant is called with the Health's lock
// held; ok false leaves the endpoint charged to its key. Call it right
// after resolve.NewHealth, before the Health is used. Package resolve sets
// ChargeTo in its init.
var ChargeTo func(h any, registrant func(service string, addr netip.AddrPort) (from netip.Addr, ok bool))
