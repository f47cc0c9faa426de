// Package registry is roam's embedded registry: the zero-setup resolver for
// a laptop, a lab or a small fleet, beyond one process. A Server (New,
// Listen, and the `roam registry` command) holds registrations in memory;
// a Client speaks to it over QUIC.
//
// Importing the package, even as _, registers the registry:// scheme with
// resolve.Open, as a database/sql driver registers itself. Package sal
// imports it, so a program that uses a sal.Host has it; a program that
// uses resolve alone imports it:
//
//	import _ "github.com/roamnet/roam/resolve/registry"
//
//	ROAM_RESOLVER=registry://10.0.0.1:7700?key=FINGERPRINT
//
// key= pins the registry's key (Server.Key, printed by `roam registry`);
// given once, it is always checked: an empty, repeated, malformed or
// all-zero one makes resolve.Open fail (resolve.ErrInvalidFingerprint,
// resolve.ErrZeroFingerprint). Leave it out only in a lab: the connection
// is then encrypted but unauthenticated.
//
// Registrations are leases the client renews, each proved by a signature
// of the service's key bound to the TLS session (resolve.Sign); a name is
// bound to the key of its first registration (resolve.CheckOwner). Watches
// are pushed; with a Prober the registry leaves unhealthy endpoints out
// (see resolve.Health). A restarted registry is rebuilt from its clients'
// renewals. It bounds what clients may make it hold (handshakes,
// connections, leases, watches, names; Config's Max fields), refusing the
// excess with a resolve.LimitError and counting it in Stats.Limits.
//
// # Errors
//
// Server and Client return *resolve.Error, whose cause is one of resolve's
// errors (resolve.ErrNotFound, resolve.ErrAllDown, resolve.ErrInvalid,
// resolve.ErrUnsigned, resolve.ErrNotOwner, resolve.ErrClosed,
// resolve.ErrUnavailable when the registry cannot be reached, and
// resolve.ErrLimit, with a *resolve.LimitError naming the limit, when a
// request or a connection would go over one), or this package's own:
//
//   - ErrKeyMismatch: the registry proved another key than the pinned one.
//     It comes wrapped in resolve.ErrUnavailable, as a connection that
//     failed.
//
// ErrLimit and LimitError are declared in package resolve, so that code
// that only tells errors apart needs no import of this one.
package registry

import "github.com/roamnet/roam/resolve"

func init() {
	resolve.RegisterScheme("registry", "registry://host:port[?key=fingerprint]", openRegistry)
}
