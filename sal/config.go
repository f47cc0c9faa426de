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

	// Paths lists further local addresses ("ip:0" or "ip:port") that the
	// Host also uses, each on its own socket, opened with ListenPacket.
	// For every peer it dials, the Host keeps a validated connection on
	// each path, and when the path carrying a flow stops answering (for
	// about a PTO), the flow resumes at once on a path that works, with no
	// handshake: see PathPolicy, Host.AddPath and Host.Paths. With Monitor
	// set, every usable address of an up interface is a path too, added
	// and removed as the Monitor reports. A Host with no Paths and no
	// Monitor has one path.
	Paths []string

	// PathPolicy says how flows use several paths; the zero value is
	// PathStandby.
	PathPolicy PathPolicy

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
	// are refused with ErrBusy. Once it is half full, a connection whose
	// flows hold an eighth of it gets no more, so that one peer's flood
	// cannot fill it for all. If zero, 256.
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

	// HostBuffer bounds the memory all of the Host's flows keep for
	// replay, counted in the 64 KiB chunks they really hold. If zero,
	// 512 MiB.
	HostBuffer int

	// ConnBuffer bounds the part of HostBuffer that the flows of one
	// connection (one peer) may hold, so that a peer that stops
	// acknowledging cannot block every other peer's writes. Once half of
	// HostBuffer is in use, a connection may grow only up to an equal part
	// of the other half, so each connection can always take its fair part.
	// If zero, a quarter of HostBuffer, and at least FlowBuffer.
	ConnBuffer int

	// StallTimeout bounds how long a flow's Write may wait for room while
	// its peer, still heard on a live connection, has taken everything sent
	// at the QUIC level but acknowledged none of it. An honest peer
	// acknowledges within milliseconds of its application reading; one that
	// reads slowly holds the data back with QUIC flow control instead,
	// which does not count. The flow then fails with ErrStalled (and
	// ErrFlowLost), and the peer sees it reset. If zero, 20 s; negative
	// turns the check off.
	StallTimeout time.Duration

	// MaxFlowsPerConn bounds the flows, resumes and pings one connection
	// may have open at this Host; one more is refused with a LimitError.
	// If zero, 4096.
	MaxFlowsPerConn int

	// MaxConnsPerKey and MaxConnsPerAddr bound the connections peers may
	// have open to this Host at once with one key, and from one IP
	// address. A connection over either is closed as soon as its handshake
	// is done, and the dialer's flow fails with a LimitError. If zero, 16
	// per key and 256 per address.
	MaxConnsPerKey  int
	MaxConnsPerAddr int

	// MaxHandshakes bounds the QUIC handshakes in progress at this Host;
	// further ones are refused (the dialer gets a LimitError). If zero, 512.
	MaxHandshakes int

	// RetryThreshold is how many handshakes may be in progress before a
	// new one must prove its source address with a QUIC Retry, one round
	// trip more, so that a flood of spoofed Initials costs no state. If
	// zero, 32; negative asks every handshake for a Retry.
	RetryThreshold int

	// InboundIdleTimeout is how long a connection a peer dialed may carry
	// no flow before this Host closes it. If zero, twice IdleConnTimeout,
	// so that the dialer, which keeps it for IdleConnTimeout, closes it
	// first. A connection that has carried nothing at all since its
	// handshake is closed after at most 5 s: a dialer opens its first flow
	// at once.
	InboundIdleTimeout time.Duration

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

func (c *Config) connBuffer() int {
	if c.ConnBuffer > 0 {
		return c.ConnBuffer
	}
	return max(c.hostBuffer()/4, c.flowBuffer())
}

func (c *Config) stallTimeout() time.Duration {
	if c.StallTimeout < 0 {
		return 0
	}
	return durationOr(c.StallTimeout, 20*time.Second)
}

func intOr(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

func (c *Config) maxFlowsPerConn() int { return intOr(c.MaxFlowsPerConn, 4096) }
func (c *Config) maxConnsPerKey() int  { return intOr(c.MaxConnsPerKey, 16) }
func (c *Config) maxConnsPerAddr() int { return intOr(c.MaxConnsPerAddr, 256) }
func (c *Config) maxHandshakes() int   { return intOr(c.MaxHandshakes, 512) }

func (c *Config) retryThreshold() int {
	if c.RetryThreshold < 0 {
		return 0
	}
	return intOr(c.RetryThreshold, 32)
}

func (c *Config) inboundIdleTimeout() time.Duration {
	return durationOr(c.InboundIdleTimeout, 2*c.idleConnTimeout())
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
		// concurrent flows. A little above MaxFlowsPerConn, so that the
		// SAL refuses the flow over it with a reason, while QUIC bounds
		// what a peer that ignores the refusal can open.
		q.MaxIncomingStreams = int64(c.maxFlowsPerConn() + 64)
	}
	if q.TokenStore == nil {
		// Keep the address-validation tokens peers hand out (NEW_TOKEN), so
		// that a reconnection to a Host under a flood, which asks new
		// handshakes for a Retry (see RetryThreshold), skips that round trip.
		q.TokenStore = quic.NewLRUTokenStore(256, 4)
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

// listenQUICConfig is quicConfig for the connections peers dial: a
// handshake that does not complete gives its state back after at most 3 s
// of silence (quic-go's default is 5 s, for a handshake timeout of 10 s),
// unless QUIC sets HandshakeIdleTimeout, so that a flood of Initials that
// never complete ends soon after the flood.
func (c *Config) listenQUICConfig() *quic.Config {
	q := c.quicConfig()
	if q.HandshakeIdleTimeout == 0 {
		q.HandshakeIdleTimeout = 3 * time.Second
	}
	return q
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}
