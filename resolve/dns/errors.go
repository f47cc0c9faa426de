package dns

import "github.com/roamnet/roam/resolve"

// Errors of this package; the others a Resolver gives are resolve's (see
// the package documentation). Each may be wrapped; test with errors.Is.
var (
	// ErrFailure means a DNS lookup got no usable answer: every server
	// timed out, failed (SERVFAIL, REFUSED...) or sent a malformed reply.
	// Unlike resolve.ErrNotFound it says nothing about the service. Every
	// *QueryError is one. It is resolve.ErrDNSFailure, under this
	// package's name.
	ErrFailure = resolve.ErrDNSFailure
)
