package resolve

import (
	"errors"
	"fmt"
	"strings"
)

// Errors, all of them here. Each may be wrapped; test with errors.Is.
var (
	// ErrNotFound means no endpoint is known for the service.
	ErrNotFound = errors.New("resolve: not found")
	// ErrClosed means the resolver or registration was closed.
	ErrClosed = errors.New("resolve: closed")
	// ErrInvalidFingerprint means a key fingerprint did not parse.
	ErrInvalidFingerprint = errors.New("resolve: invalid key fingerprint")
	// ErrZeroFingerprint means a pin was given as the all-zero
	// fingerprint ("aaaa...", 52 times), which no key has and which would
	// read as no pin at all. It wraps ErrInvalidFingerprint.
	ErrZeroFingerprint = fmt.Errorf("%w: all zero, which pins no key", ErrInvalidFingerprint)
	// ErrUnsigned means the backend wants proof of the service's key and
	// got none, or a proof that does not verify: use RegisterSigned. (It
	// is about a registration; sal.ErrUnauthenticated is about a dial.)
	ErrUnsigned = errors.New("resolve: registration not signed by the service's key")
	// ErrUnauthenticated is ErrUnsigned's earlier name.
	//
	// Deprecated: use ErrUnsigned, which says what is missing, and does
	// not share sal.ErrUnauthenticated's name.
	ErrUnauthenticated = ErrUnsigned
	// ErrNotOwner means the service is bound to another key than the one
	// the registration proved.
	ErrNotOwner = errors.New("resolve: service is bound to another key")
	// ErrLimit means a registry refused a request, or a connection, that
	// would have gone over one of its limits; a *LimitError says which.
	ErrLimit = errors.New("resolve: over the registry's limit")
	// ErrUnsupported means the backend lacks the asked-for ability, such as
	// a Cache asked to Watch a backend that is not a Watcher.
	ErrUnsupported = errors.New("resolve: not supported by this backend")
	// ErrInvalid means an argument was malformed: an empty service name, an
	// Endpoint without a usable address, or a bad static table.
	ErrInvalid = errors.New("resolve: invalid argument")
	// ErrUnavailable means a remote backend (a registry, an etcd cluster)
	// could not be reached or stopped answering.
	ErrUnavailable = errors.New("resolve: backend unavailable")
	// ErrRegistryKey means a registry proved a key other than the pinned
	// one. Package registry returns it, under the name
	// registry.ErrKeyMismatch too (one value, as fs.ErrNotExist is
	// os.ErrNotExist), so code that tells errors apart needs no import of
	// the registry.
	ErrRegistryKey = errors.New("resolve: registry key does not match the pin")
	// ErrDNSFailure means a DNS lookup got no usable answer: every server
	// timed out, failed or sent a malformed reply. Package dns returns it,
	// under the name dns.ErrFailure too.
	ErrDNSFailure = errors.New("resolve: dns lookup failed")
)

// ErrAllDown means the service has endpoints, but every one of them failed
// its health probes (see Health), so none is answered. It matches
// ErrNotFound too: errors.Is(err, ErrNotFound) holds for every err that
// wraps ErrAllDown, so callers that only know ErrNotFound see a service
// that cannot be reached as one that is not there.
var ErrAllDown error = allDownError{}

type allDownError struct{}

func (allDownError) Error() string { return "resolve: every endpoint is down" }

// Is makes ErrAllDown match ErrNotFound.
func (allDownError) Is(target error) bool { return target == ErrNotFound }

// Error records the operation and the service that failed, in the manner
// of net.OpError. Backends return it so that callers can log one line that
// says what was asked, and still test the cause with errors.Is.
type Error struct {
	// Op is the operation: "resolve", "register" or "watch".
	Op string
	// Service is the service ID as the backend saw it (case-folded).
	Service string
	// Err is the cause, such as ErrNotFound or a context error.
	Err error
}

// Error reads "resolve web: not found", "resolve register web: ...":
// the package's name leads once, so the "resolve" op and the cause's own
// "resolve: " prefix are not said again.
func (e *Error) Error() string {
	if e == nil {
		return "<nil>"
	}
	var b strings.Builder
	b.WriteString("resolve")
	if e.Op != "resolve" {
		b.WriteByte(' ')
		b.WriteString(e.Op)
	}
	if e.Service != "" {
		b.WriteByte(' ')
		b.WriteString(e.Service)
	}
	b.WriteString(": ")
	if e.Err == nil {
		b.WriteString("<nil>")
	} else {
		b.WriteString(strings.TrimPrefix(e.Err.Error(), "resolve: "))
	}
	return b.String()
}

// Unwrap returns the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Err }

// asError wraps err in an *Error unless it already holds one, so that
// stacked resolvers (a Cache over a backend) do not say the same twice.
func asError(op, service string, err error) error {
	if e := (*Error)(nil); errors.As(err, &e) {
		return err
	}
	return &Error{Op: op, Service: service, Err: err}
}

// serviceKey returns the case-folded form under which backends store a
// service. strings.ToLower returns its argument unchanged, without
// allocating, when it holds no upper-case letter: the common case.
func serviceKey(op, service string) (string, error) { return ServiceKey(op, service) }

// ServiceKey returns the form of a service name that backends store and
// compare (lower case), or, for an empty name, an *Error for op that
// wraps ErrInvalid. Backends outside this package use it to agree with
// the built-in ones.
func ServiceKey(op, service string) (string, error) {
	if service == "" {
		return "", &Error{Op: op, Err: errEmptyService}
	}
	return strings.ToLower(service), nil
}

var errEmptyService = fmt.Errorf("%w: empty service name", ErrInvalid)
