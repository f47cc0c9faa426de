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
// Open picks a backend by URL (memory:, static:, registry://, dns://,
// etcd://); a sal.Host given no resolver opens the URL in $ROAM_RESOLVER.
// Memory and Static are in this package. The registry and DNS are the
// sub-packages registry and dns, which sal links by default; a program
// using resolve without sal imports them, as database/sql drivers, and
// Open names the import a URL needs when it is missing.
//
//   - Memory (NewMemory) is an in-process registry for Hosts in one process,
//     tests and examples. It resolves, accepts registrations and pushes
//     changes to watchers.
//   - Static (NewStatic, ParseStatic) is a fixed table, such as
//     "web=10.0.0.1:443,10.0.0.2:443;db=[fd00::5]:5432" from a flag.
//   - The registry (package github.com/roamnet/roam/resolve/registry:
//     registry.Listen, and the `roam registry` command) is roam's
//     embedded registry, the zero-setup default beyond one process;
//     registry.Client (or Open with registry://host:port?key=FP) speaks to
//     it over QUIC. Registrations are leases the client renews, each
//     proved by a signature of the service's key bound to the TLS session;
//     watches are pushed; with a Prober the registry leaves unhealthy
//     endpoints out. A restarted registry is rebuilt from its clients'
//     renewals. It bounds what clients may make it hold (handshakes,
//     connections, leases, watches, names), refusing the excess with a
//     LimitError and counting it in registry.Stats.Limits.
//   - DNS (package github.com/roamnet/roam/resolve/dns: dns.New, or Open
//     with dns://[server:port]/) reads SRV, A/AAAA and TXT key pins,
//     honours TTLs and serves stale answers while the nameservers fail;
//     its Watch polls at the TTL.
//   - etcd (package github.com/roamnet/roam/resolve/etcd, a module of its
//     own, so that only programs that import it link the etcd client,
//     gRPC and protobuf) is for fleets on many machines; importing it
//     registers etcd:// with Open (see RegisterScheme).
//
// # Who may register
//
// Backends that implement SignedRegistrar accept a registration only with
// a Proof (Sign, Proof.Verify) that the registrant holds the key its
// endpoint pins. A self-certifying ID is bound to its own key (IDKey), any
// other name to the key of its first registration (CheckOwner); another
// key gets ErrNotOwner.
//
// # Cache
//
// NewCache wraps any Resolver. A hit costs no allocation and no backend
// call; concurrent misses for one service share one lookup; not-found
// answers are remembered briefly (CacheConfig.NegativeTTL). Over a backend
// that can Watch, each cached service is kept fresh by a watch, so pushed
// changes apply at once. The Cache is itself a Resolver, so it stacks.
//
// # Health
//
// NewHealth wraps any Resolver with a Prober (a sal.Host is one: it sends
// SAL pings) and leaves out of answers and watches the endpoints that
// failed HealthConfig.Failures probes in a row, until one succeeds: a
// provider that crashed without withdrawing is gone from answers within
// Interval*Failures plus its probe deadline (at most 4 s by default), long
// before its lease ends. When every endpoint is down, none is answered:
// Resolve fails with ErrAllDown and watches get an empty set
// (HealthConfig.AnswerWhenAllDown answers all of them instead). Endpoints
// that never answered a probe cannot starve those that did: they get at
// most half of the probes in flight, fewer and fewer once down, and the
// registering keys (at a registry, the registering addresses) take turns.
// A Health is always a Watcher (it polls a wrapped resolver that cannot
// watch), passes registrations through, and probes a service while
// someone resolves or watches it, or since Track. Status reports each
// endpoint.
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
// backend cannot watch returns an error wrapping ErrUnsupported. Memory and
// Health are also FuncWatchers: WatchFunc calls a function with each new
// set, so that a server holding thousands of watches (the registry) spends
// no goroutine on each.
//
// # Errors
//
// Backends and the Cache return *Error, which records the operation and the
// service as net.OpError does; use errors.As to get it. Its cause is one of
// the following, possibly wrapped; test with errors.Is:
//
//   - ErrNotFound: no endpoint is known for the service.
//   - ErrAllDown: the service has endpoints, but a Health (or a registry
//     that probes) found every one of them down. It matches ErrNotFound
//     too, so test for it first.
//   - ErrClosed: the resolver or the Cache was closed.
//   - ErrInvalid: an empty service name, an Endpoint without a usable
//     address, or a malformed static table (ParseStatic's errors wrap it
//     too, without an *Error).
//   - ErrUnsupported: the backend lacks the asked-for ability; or Open was
//     given a URL whose backend the program does not link (the error
//     names the import to add).
//   - ErrUnavailable: a remote backend could not be reached or stopped
//     answering.
//   - ErrLimit: a registry refused a registration, a watch or the
//     connection itself, which would have gone over one of its limits
//     (registry.Config's Max fields). The error is then a *LimitError that
//     names the limit and its value; use errors.As. A connection refused
//     over a limit matches ErrUnavailable too. ErrLimit and LimitError
//     are declared here, not in package registry, so that telling errors
//     apart needs no import of the registry.
//   - ErrUnsigned: a backend that takes only signed registrations got
//     none, or a proof that does not verify (ErrUnauthenticated is its
//     deprecated name). ErrNotOwner: the service is bound to another key.
//   - context.Canceled, context.DeadlineExceeded or the context's own
//     cause (context.Cause): the caller's context ended, or a Cache lookup
//     exceeded CacheConfig.LookupTimeout.
//
// All of them are declared in errors.go. ErrInvalidFingerprint comes from
// ParseFingerprint, and from Open for a bad key= in a registry:// URL;
// ErrZeroFingerprint, which wraps it, when the fingerprint is all zero: a
// pin that is given is always checked, so the zero one, which would pin
// nothing, is refused. Two belong to the backends in packages of their
// own, which also give them their own names, so that code telling errors
// apart needs import neither: ErrRegistryKey, a registry's proven key that
// is not the pinned one (registry.ErrKeyMismatch), and ErrDNSFailure, a DNS
// lookup that got no usable answer (dns.ErrFailure).
//
// # Testing a backend
//
// Package resolvetest holds a conformance suite; every backend should pass
// resolvetest.Run, or resolvetest.RunSigned if it takes only signed
// registrations. Package sal/saltest runs a backend under two sal Hosts
// (RunHosts) and measures backends side by side (BenchBackends); it lives
// under sal so that nothing under resolve imports sal.
package resolve
