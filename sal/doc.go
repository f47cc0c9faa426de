// Package sal is roam's service access layer: programs dial services by
// name instead of IP addresses, and get flows that are plain net.Conns.
//
// A Host owns one UDP socket, a TLS 1.3 identity and a resolver. Dial and
// Listen take service IDs:
//
//	mem := resolve.NewMemory()                       // or any resolve.Resolver
//	server, _ := sal.NewHost(sal.Config{Resolver: mem})
//	l, _ := server.Listen(ctx, "echo.demo")          // registers the endpoint
//	client, _ := sal.NewHost(sal.Config{Resolver: mem})
//	c, _ := client.Dial(ctx, "echo.demo")            // a *sal.Conn, a net.Conn
//
// # Service IDs
//
// A service ID is a DNS-style name ("echo.demo"; case-folded; at most 253
// bytes), optionally led by a key label that makes it self-certifying:
// "rk--<fingerprint>.echo.demo" names the SHA-256 of the service's public
// key, so a dialer checks the peer whatever a resolver says. The Host's key
// is the key of every service it serves (Host.ServiceID builds the
// self-certifying form). When neither the ID nor the resolver pins a key,
// the flow is encrypted but not authenticated: Conn.Authenticated reports
// false, and Config.RequireAuthentication turns such dials into errors.
//
// # Flows and connections
//
// Flows to the same peer share one QUIC connection, one stream per flow.
// A flow begins with a small SAL header naming the service and a flow ID;
// the listening Host answers before any data moves, so a dial to a service
// that is not served at the reached Host fails at the dialer. The service
// table (Host.Table) decides per service, by longest label-suffix match,
// whether to resolve, use fixed endpoints, or drop. When a service has
// several endpoints, new flows are spread across them and a dial fails over
// to the next endpoint when one does not answer within
// Config.EndpointTimeout.
//
// Host.DialContext has net.Dialer's shape, for http.Transport.DialContext,
// and Host.DialAddr the shape grpc.WithContextDialer takes; a Listener is a
// net.Listener, for http.Serve and grpc.Server.Serve. gRPC needs the
// service as a passthrough target, so that it does not look the name up in
// DNS, and no transport security of its own (the flow is TLS 1.3):
//
//	cc, err := grpc.NewClient("passthrough:///grpc.demo",
//		grpc.WithContextDialer(client.DialAddr),
//		grpc.WithTransportCredentials(insecure.NewCredentials()))
//
// An Addr reads as "service:port" (the UDP port that carries the flow
// now), so net.SplitHostPort parses a flow's LocalAddr and RemoteAddr.
//
// # Motion
//
// Each end of a flow keeps what the other has not acknowledged reading
// (Config.FlowBuffer, Config.HostBuffer). When the Host's address changes
// (Host.Rebind, or Config.Monitor), the connections it dialed migrate with
// QUIC's path probe; when the peer owes acknowledgements, the probe, which
// a congestion window filled on the dead path can hold back, races a fresh
// handshake from the new address, and the flows resume on the fresh
// connection if it answers first. When a connection cannot go on (the
// peer moved, a NAT forgot its mapping, a migration failed), the dialing end connects to the service's
// current endpoint and resumes every flow the connection carried, each
// end replaying what the other missed, until Config.ResumeTimeout has
// passed since the peer was last heard. A
// connection that stays silent for three PTOs (at least
// Config.SilenceTimeout, 100 ms by default) while the peer still completes
// a fresh handshake is replaced at once rather than after QUIC's idle
// timeout. Config.OnEvent reports each step as an Event.
//
// # Resolvers and registration
//
// With no Config.Resolver, NewHost opens the URL in the environment
// variable ROAM_RESOLVER (resolve.Open: memory:, static:, dns://,
// registry://, etcd://) and closes it with the Host. sal links the dns://
// and registry:// backends (packages resolve/dns and resolve/registry);
// etcd:// takes an import of resolve/etcd. Listen registers the
// Host's endpoint with the first registrar down the resolver's Unwrap
// chain, signed with the Host's key when it is a resolve.SignedRegistrar;
// a refusal fails Listen with the backend's error (resolve.ErrNotOwner,
// resolve.ErrUnsigned).
//
// # Health
//
// Host.Ping asks an endpoint, over the connection flows would use, whether
// it serves a service, without opening a flow; Host.Probe is the same
// check as a resolve.Prober, so that resolve.NewHealth(r, host, cfg) keeps
// endpoints that stopped answering out of r's answers within seconds.
//
// # Accounting
//
// Host.ServiceStats counts, per service, the flows dialed, accepted, open
// and lost, the application bytes sent and received, resumes and
// migrations. The same figures are published with expvar: the map "roam"
// holds one entry per live Host, named by the first 16 characters of its
// key's fingerprint (Host.Key), and dropped when the Host closes.
//
// # Paths
//
// A Host may use several local addresses at once (Config.Paths,
// Host.AddPath, or every address a Config.Monitor allows), each a path
// with its own socket. For every peer it dials, it keeps a validated
// connection on each path; when the path carrying a flow stops answering,
// which a watcher tells within a fraction of a round trip, the flow
// resumes at once on a path that works, with no handshake. Host.Paths
// describes them; EventPathDown and EventPathUp report the changes.
// Config.PathPolicy says how flows use them: one path at a time
// (PathStandby, PathSpread), or each flow over all of them at once
// (PathAggregate: a striped carrier, with a stream on every path and the
// chunks put in order by offset at the receiver).
//
// # Limits
//
// A listening Host bounds what one peer can make it hold, so that a hostile
// or broken peer cannot stall the others or exhaust the machine: the
// memory its flows keep for replay (Config.ConnBuffer, a fair part of
// HostBuffer under pressure), how long a flow may wait on a peer that reads
// but never acknowledges (StallTimeout), flows per connection
// (MaxFlowsPerConn), connections per key and per address (MaxConnsPerKey,
// MaxConnsPerAddr), connections that carry nothing (InboundIdleTimeout),
// and handshakes in progress (MaxHandshakes, with QUIC Retry past
// RetryThreshold so that spoofed Initials cost no state). A refused peer
// gets a *LimitError; every refusal is counted in Host.LimitStats and in
// the expvar map "roam_limits", under the Host's name in "roam".
//
// # Errors
//
// Methods return *OpError, which wraps the cause and implements net.Error.
// Targets for errors.Is, all declared in errors.go:
//
//   - ErrInvalidServiceID (with *ServiceIDError for errors.As): a service
//     ID did not parse. ErrDropped: the service table drops the service;
//     ErrInvalidRule: a malformed table rule.
//   - ErrUnreachable: no endpoint answered; resolve.ErrNotFound: the
//     service is unknown. ErrNoListener, ErrBusy, ErrRefused: the reached
//     Host does not serve the service, has a full accept queue, or refused.
//   - ErrLimit (with *LimitError for errors.As): the peer's Host refused a
//     flow or connection over one of its limits.
//   - ErrFlowLost: the flow could not be resumed; ErrStalled (with
//     ErrFlowLost): a peer that read but never acknowledged;
//     ErrPeerClosed: the peer closed the flow, so writes cannot arrive.
//   - ErrProtocol: the peer sent garbage. ErrKeyMismatch: the peer does
//     not hold the pinned key; ErrUnauthenticated: a dial with
//     Config.RequireAuthentication and no pin (resolve.ErrUnsigned is the
//     registration's counterpart).
//   - ErrAlreadyListening, ErrNoResolver, ErrBadNetwork (DialContext),
//     ErrPathExists (AddPath), ErrBadKeyFile (LoadKey).
//   - resolve.ErrNotOwner and resolve.ErrUnsigned: a refused
//     registration (Listen).
//   - net.ErrClosed (a closed Conn, Listener or Host),
//     os.ErrDeadlineExceeded (a Conn deadline), and context errors. Errors
//     of quic-go (*quic.StreamError, *quic.ApplicationError, ...) pass
//     through.
package sal
