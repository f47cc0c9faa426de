// Package dns is roam's read-only resolver backend over the Domain Name
// System, for services published at internet scale: a service NAME is the
// SRV record set at "_roam._udp.NAME.", with the targets' A and AAAA
// addresses, and a TXT record "key=<fingerprint>" at the same name pins
// the endpoints' key. It honours TTLs, serves stale answers while the
// nameservers fail (RFC 8767), and its Watch polls at the TTL. See
// Resolver.
//
// Importing the package, even as _, registers the dns:// scheme with
// resolve.Open, as a database/sql driver registers itself. Package sal
// imports it, so a program that uses a sal.Host has it; a program that
// uses resolve alone imports it:
//
//	import _ "github.com/roamnet/roam/resolve/dns"
//
//	ROAM_RESOLVER=dns://10.0.0.53:53/   # or dns:/// for the system's nameservers
//
// The URL takes only a server, whose port defaults to 53.
//
// # Errors
//
// A Resolver returns *resolve.Error, whose cause wraps resolve.ErrNotFound
// (NXDOMAIN, or no usable SRV record), resolve.ErrInvalid (a name DNS
// cannot carry), resolve.ErrInvalidFingerprint (a broken TXT pin),
// resolve.ErrClosed, the caller's context's cause, or this package's own:
//
//   - ErrFailure: a lookup got no usable answer (every server timed out,
//     failed or sent a malformed reply); the error then holds a
//     *QueryError for the last query that failed. Unlike
//     resolve.ErrNotFound it says nothing about the service.
package dns

import (
	"context"
	"fmt"
	"net/url"

	"github.com/roamnet/roam/resolve"
)

func init() {
	resolve.RegisterScheme("dns", "dns://[server:port]/", openDNS)
}

// openDNS opens "dns://[server:port]/".
func openDNS(_ context.Context, u *url.URL) (resolve.Resolver, error) {
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Opaque != "" {
		return nil, resolve.BadURL(u.String(), "dns takes only a server, as in dns://127.0.0.1:53/")
	}
	var cfg Config
	if u.Host != "" {
		if u.Port() == "" {
			u.Host += ":53"
		}
		cfg.Servers = []string{u.Host}
	}
	d, err := New(cfg)
	if err != nil {
		return nil, fmt.Errorf("resolve: open %q: %w", u.String(), err)
	}
	return d, nil
}
