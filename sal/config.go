package sal

import (
	"context"
	"crypto"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/mobility"
	"github.com/roamnet/roam/resolve"
)

// Config configures a Host. The zero value of every field but Resolver is a
// sensible default. NewHost copies the Config; later changes to it have no
// effect, and the Host never modifies it.
type Config struct {
	// Resolver maps service IDs to endpoints. If it (or a resolver down
	// its Unwrap chain) is a resolve.SignedRegistrar, Listen registers the
	// Host's endpoint with it, proving the Host's key; else if it is a
	// resolve.Registrar, Listen registers without proof. The Host puts a
	// resolve.Cache in front of it unless it already is one.
	//
	// If nil, NewHost opens the URL in the environment variable
	// ROAM_RESOLVER with resolve.Open (giving it at most 10 s) and closes
	// what it opened when the Host closes; with neither, NewHost fails
	// with ErrNoResolver.
	Resolver resolve.Resolver

	// ListenAddr is the local UDP address; default "0.0.0.0:0".
	ListenAddr string

	// ListenPacket opens the Host's sockets (at start and on every later rebind);
	// nil means UDP sockets. Tests give it the sockets of an in-memory network.
	ListenPacket func(ctx context.Context, network, address string) (net.PacketConn, error)

	// Monitor, if set, makes the Host follow the machine's preferred local
	// address: when the Monitor's policy picks another one (the wifi went
	// away, a cable was plugged in), or the address in use disappears, the
	// Host Rebinds to it, migrating its connections with no application
	// code. With no ListenAddr, the Host starts on the Monitor's pick. The
	// Host does not close the Monitor.
	Monitor *mobility.Monitor

	// Key is the Host's identity: the key its services prove they hold and
	// that self-certifying service IDs name. If nil, an Ed25519 key is
	// generated, so the Host has a new identity each time it starts.
	Key crypto.Signer

	// RequireAuthentication makes dials fail with ErrUnauthenticated when
	// neither the service ID nor the resolver pins a key for the service.
	// By default such flows are encrypted but not authenticated, and
	// Conn.Authenticated reports false.
	RequireAuthentication bool

	// AdvertiseAddr is the endpoint Listen registers. If zero, the Host's
	// LocalAddr is registered; an unspecified IP there means "this
	// machine", which in-process resolvers need and remote registries
	// replace with the address they observe.
	AdvertiseAddr netip.AddrPort

	// EndpointTimeout bounds the attempt on one endpoint when a service has
	// several, before the dial fails over to the next. The last endpoint
	// gets whatever remains of the dial's context. If zero, 2 s.
	EndpointTimeout time.Duration

	// OpenTimeout bounds how long a listening Host waits for a new stream's
	// SAL header, so that silent peers cannot pin streams. If zero, 10 s.
	OpenTimeout time.Duration

	// SilenceTimeout is how long a connection this Host dialed may go
	// unanswered (packets sent that call for an acknowledgement, nothing
	// heard) before the Host checks the peer with a fresh handshake. If
	// that gets through while the old connection is still silent, the old
	// connection is broken, not the network: a NAT forgot its mapping, or
	// the peer keeps answering an address the Host no longer has. The
	// flows then resume on the new connection instead of waiting out
	// QUIC's idle timeout. If zero, 1 s (at least three PTOs); negative
	// turns the check off.
	SilenceTimeout time.Duration

	// IdleConnTimeout is how long a connection to a peer stays open after
	// its last flow closed, so that a further flow costs no handshake. If
	// zero, 30 s.
	IdleConnTimeout time.Duration

	// Backlog is how many accepted flows wait per Listener before new ones
	// are refused with ErrBusy. If zero, 256.
	Backlog int

	// ResumeTimeout bounds how long a flow may go without hearing from its
	// peer: once this long has passed since the last packet heard on the
	// connection that carried it, and no resume has got through, its Reads
	// and Writes fail with ErrFlowLost. The clock starts at the last packet
	// heard, not when the connection is declared dead, so a path that dies
	// for good fails the flow within about ResumeTimeout. Unless QUIC sets
	// MaxIdleTimeout, a connection's idle timeout is ResumeTimeout, at most
	// 30 s, and its keep-alives come at half of that. If zero, 60 s.
	ResumeTimeout time.Duration

	// FlowBuffer bounds the bytes one flow keeps until the peer
	// acknowledges reading them, for replay after a resume; Write blocks
	// while it is full. It also bounds how far a writer can run ahead of
	// its reader, so it should exceed the path's bandwidth-delay product.
	// If zero, 8 MiB.
	FlowBuffer int

	// HostBuffer bounds the bytes all of the Host's flows keep for replay.
	// If zero, 512 MiB.
	HostBuffer int

	// OnEvent, if set, receives every Event: flows suspended, resumed and
	// lost, connections migrated, the Host rebound. It is called
	// synchronously from the Host's goroutines and must not block.
	OnEvent func(Event)

	// Cache configures the resolve.Cache in front of Resolver.
	Cache resolve.CacheConfig

	// QUIC overrides quic-go's settings. The Host copies it and sets what it
	// needs (keep-alives, stream limits) where the caller left zero.
	QUIC *quic.Config

	// Logger receives diagnostics. If nil, nothing is logged.
	Logger *slog.Logger
}

func (c *Config) listenAddr() string {
	if c.ListenAddr != "" {
		return c.ListenAddr
	}
	if c.Monitor != nil {
		if a := c.Monitor.Preferred(); a.IsValid() {
			return netip.AddrPortFrom(a, 0).String()
		}
	}
	return "0.0.0.0:0"
}

func durationOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (c *Config) endpointTimeout() time.Duration { return durationOr(c.EndpointTimeout, 2*time.Second) }
func (c *Config) openTimeout() time.Duration     { return durationOr(c.OpenTimeout, 10*time.Second) }
func (c *Config) silenceTimeout() time.Duration {
	if c.SilenceTimeout < 0 {
		return 0
	}
	return durationOr(c.SilenceTimeout, time.Second)
}
func (c *Config) idleConnTimeout() time.Duration {
	return durationOr(c.IdleConnTimeout, 30*time.Second)
}

func (c *Config) resumeTimeout() time.Duration { return durationOr(c.ResumeTimeout, 60*time.Second) }

func (c *Config) flowBuffer() int {
	if c.FlowBuffer <= 0 {
		return 8 << 20
	}
	return c.FlowBuffer
}

func (c *Config) hostBuffer() int {
	if c.HostBuffer <= 0 {
		return 512 << 20
	}
	return c.HostBuffer
}

func (c *Config) backlog() int {
	if c.Backlog <= 0 {
		return 256
	}
	return c.Backlog
}

func (c *Config) quicConfig() *quic.Config {
	var q quic.Config
	if c.QUIC != nil {
		q = *c.QUIC
	}
	if q.MaxIncomingStreams == 0 {
		// One stream per flow: the default of 100 would cap a peer at 100
		// concurrent flows.
		q.MaxIncomingStreams = 1 << 16
	}
	if q.KeepAlivePeriod == 0 {
		// Keeps NAT mappings and the idle timer alive while flows are quiet.
		// quic-go sends them at most every half idle timeout.
		q.KeepAlivePeriod = 10 * time.Second
	}
	if q.MaxIdleTimeout == 0 {
		// A connection silent for longer than ResumeTimeout cannot carry
		// its flows any more: they are lost by then (see Conn.suspend).
		// Declaring it dead no later lets them fail within ResumeTimeout of
		// the last packet heard, on both ends, instead of after 30 s plus
		// ResumeTimeout. quic-go's default is 30 s.
		q.MaxIdleTimeout = min(30*time.Second, c.resumeTimeout())
	}
	return &q
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}
