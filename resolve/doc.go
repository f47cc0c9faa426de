// Package resolve maps service IDs to the endpoints that serve them, so
// that roam can dial a service instead of an IP address.
//
// # Resolvers
//
// A Resolver has one method: Resolve(ctx, service) returns the Endpoints
// (a UDP address, an optional pinned key Fingerprint and a TTL) known for a
// service ID, or an error wrapping ErrNotFound. Service IDs are case-folded
// by every backend here: "Web" and "web" are one service. Returned slices
// are shared; never modify them.
//
// # Backends
//
//   - Memory (NewMemory) is an in-process registry for Hosts in one process,
//     tests and examples. It resolves, accepts registrations and pushes
//     changes to watchers.
//   - Static (NewStatic, ParseStatic) is a fixed table, such as
//     "web=10.0.0.1:443,10.0.0.2:443;db=[fd00::5]:5432" from a flag.
//
// # Cache
//
// NewCache wraps any Resolver. A hit costs no allocation and no backend
// call; concurrent misses for one service share one lookup; not-found
// answers are remembered briefly (CacheConfig.NegativeTTL). Over a backend
// that can Watch, each cached service is kept fresh by a watch, so pushed
// changes apply at once. The Cache is itself a Resolver, so it stacks.
//
// # Optional abilities
//
// Abilities beyond Resolve are separate interfaces, found by type
// assertion:
//
//	if reg, ok := r.(resolve.Registrar); ok { ... } // Register, Close to withdraw
//	if w, ok := r.(resolve.Watcher); ok { ... }     // a channel of endpoint sets
//
// A wrapper such as Cache exposes its backend through Unwrap() Resolver;
// look there for a Registrar. A wrapper that passes Watch through but whose
// backend cannot watch returns an error wrapping ErrUnsupported.
//
// # Errors
//
// Backends and the Cache return *Error, which records the operation and the
// service as net.OpError does; use errors.As to get it. Its cause is one of
// the following, possibly wrapped; test with errors.Is:
//
//   - ErrNotFound: no endpoint is known for the service.
//   - ErrClosed: the resolver or the Cache was closed.
//   - ErrInvalid: an empty service name, an Endpoint without a usable
//     address, or a malformed static table (ParseStatic's errors wrap it
//     too, without an *Error).
//   - ErrUnsupported: the backend lacks the asked-for ability.
//   - context.Canceled, context.DeadlineExceeded or the context's own
//     cause (context.Cause): the caller's context ended, or a Cache lookup
//     exceeded CacheConfig.LookupTimeout.
//
// ErrInvalidFingerprint comes from ParseFingerprint.
//
// # Testing a backend
//
// Package resolvetest holds a conformance suite; every backend should pass
// resolvetest.Run.
package resolve
