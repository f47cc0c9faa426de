package dns_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/dns"
	"github.com/roamnet/roam/resolve/internal/dnstest"
	"github.com/roamnet/roam/resolve/resolvetest"
)

// These tests talk to dnstest servers on loopback only: every DNS they
// make is given its servers, so none reads /etc/resolv.conf or asks the
// system's resolver.

const dnsTTL = 300 * time.Second

// newDNS returns a DNS over the given servers, closed when the test ends
// (before the servers, which were made first).
func newDNS(t *testing.T, cfg dns.Config, servers ...*dnstest.Server) *dns.Resolver {
	t.Helper()
	for _, s := range servers {
		cfg.Servers = append(cfg.Servers, s.Addr())
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	d, err := dns.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// failFast is a config for tests that expect queries to go unanswered.
var failFast = dns.Config{Timeout: 50 * time.Millisecond, Attempts: 1}

// patient is a config for tests in which one DNS meets both a server that
// must answer and one that must not: a live server answers well within its
// Timeout even on a loaded machine (failFast's 50 ms is one scheduling
// hiccup), and the silent one costs a second per query.
var patient = dns.Config{Timeout: time.Second, Attempts: 1}

// srvName is where service's SRV and TXT records live.
func srvName(service string) string { return "_roam._udp." + service + "." }

// publish gives service one SRV record, for port on host "h.<service>.",
// whose addresses are addrs.
func publish(s *dnstest.Server, service string, port uint16, addrs ...string) {
	s.SetSRV(srvName(service), dnsTTL, dnstest.SRV{Priority: 10, Port: port, Target: "h." + service})
	setAddrs(s, "h."+service, dnsTTL, addrs...)
}

func setAddrs(s *dnstest.Server, host string, ttl time.Duration, addrs ...string) {
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	s.SetAddrs(host, ttl, as...)
}

// addrsOf returns the endpoints' addresses as text, in order.
func addrsOf(eps []resolve.Endpoint) []string {
	out := make([]string, len(eps))
	for i, ep := range eps {
		out[i] = ep.Addr.String()
	}
	return out
}

func TestDNSConformance(t *testing.T) {
	// DNS is read-only: the suite skips what needs a Registrar or Watcher
	// and runs NotFound, CanceledContext and Concurrent, all of which look
	// up names that no zone holds (NXDOMAIN).
	newBackend := func(t *testing.T) *dns.Resolver { return newDNS(t, dns.Config{}, dnstest.NewServer(t)) }
	t.Run("DNS", func(t *testing.T) {
		resolvetest.Run(t, func(t *testing.T) resolve.Resolver { return newBackend(t) })
	})
	t.Run("CacheOverDNS", func(t *testing.T) {
		resolvetest.Run(t, func(t *testing.T) resolve.Resolver {
			c := resolve.NewCache(newBackend(t), resolve.CacheConfig{})
			t.Cleanup(func() { _ = c.Close() })
			return c
		})
	})
}

func TestDNSGlue(t *testing.T) {
	s := dnstest.NewServer(t)
	publish(s, "web.example", 443, "192.0.2.1", "2001:db8::1")
	d := newDNS(t, dns.Config{}, s)

	eps, err := d.Resolve(context.Background(), "Web.Example") // case-folded
	require.NoError(t, err)
	require.Equal(t, []string{"192.0.2.1:443", "[2001:db8::1]:443"}, addrsOf(eps))
	require.Zero(t, eps[0].Key, "no TXT record: nothing pinned")
	require.Equal(t, dnsTTL, eps[0].TTL)
	require.Zero(t, s.Count("h.web.example", dnsmessage.TypeA), "glue must spare the A query")
	require.Zero(t, s.Count("h.web.example", dnsmessage.TypeAAAA))
	require.Equal(t, 1, s.Count(srvName("web.example"), dnsmessage.TypeTXT))
}

func TestDNSWithoutGlue(t *testing.T) {
	s := dnstest.NewServer(t)
	s.SetMode(dnstest.Mode{NoGlue: true})
	publish(s, "web.example", 443, "192.0.2.1", "2001:db8::1")
	d := newDNS(t, dns.Config{}, s)

	eps, err := d.Resolve(context.Background(), "web.example")
	require.NoError(t, err)
	require.Equal(t, []string{"192.0.2.1:443", "[2001:db8::1]:443"}, addrsOf(eps), "A before AAAA")
	require.Equal(t, 1, s.Count("h.web.example", dnsmessage.TypeA))
	require.Equal(t, 1, s.Count("h.web.example", dnsmessage.TypeAAAA))
}

func TestDNSPriorities(t *testing.T) {
	s := dnstest.NewServer(t)
	s.SetMode(dnstest.Mode{NoGlue: true}) // several targets asked for at once
	// Weights are zero, so the order within a priority is the server's.
	s.SetSRV(srvName("web.example"), dnsTTL,
		dnstest.SRV{Priority: 20, Port: 4000, Target: "backup.example"},
		dnstest.SRV{Priority: 10, Port: 4001, Target: "a.example"},
		dnstest.SRV{Priority: 10, Port: 4002, Target: "b.example"},
		dnstest.SRV{Priority: 10, Port: 4003, Target: "gone.example"}, // no address: skipped
	)
	setAddrs(s, "backup.example", dnsTTL, "192.0.2.9")
	setAddrs(s, "a.example", dnsTTL, "192.0.2.1")
	setAddrs(s, "b.example", dnsTTL, "2001:db8::2")
	d := newDNS(t, dns.Config{}, s)

	eps, err := d.Resolve(context.Background(), "web.example")
	require.NoError(t, err)
	require.Equal(t, []string{"192.0.2.1:4001", "[2001:db8::2]:4002", "192.0.2.9:4000"}, addrsOf(eps))
}

func TestDNSKeyPin(t *testing.T) {
	s := dnstest.NewServer(t)
	publish(s, "web.example", 443, "192.0.2.1", "192.0.2.2")
	fp := resolve.Fingerprint{1, 2, 3}
	s.SetTXT(srvName("web.example"), time.Minute, "v=spf1 -all", "key="+fp.String(), "other=thing")
	d := newDNS(t, dns.Config{}, s)

	eps, err := d.Resolve(context.Background(), "web.example")
	require.NoError(t, err)
	require.Len(t, eps, 2)
	for _, ep := range eps {
		require.Equal(t, fp, ep.Key)
		require.Equal(t, time.Minute, ep.TTL, "the TXT record's TTL counts")
	}
}

func TestDNSBadKeyPin(t *testing.T) {
	for _, txt := range [][]string{
		{"key=not-a-fingerprint"},
		{"key=" + resolve.Fingerprint{1}.String(), "key=" + resolve.Fingerprint{2}.String()},
	} {
		s := dnstest.NewServer(t)
		publish(s, "web.example", 443, "192.0.2.1")
		s.SetTXT(srvName("web.example"), dnsTTL, txt...)
		d := newDNS(t, dns.Config{}, s)

		eps, err := d.Resolve(context.Background(), "web.example")
		require.ErrorIs(t, err, resolve.ErrInvalidFingerprint, "a broken pin must not become no pin")
		require.NotErrorIs(t, err, resolve.ErrNotFound)
		require.Empty(t, eps)
	}
}

func TestDNSNotFound(t *testing.T) {
	s := dnstest.NewServer(t)
	s.SetTXT(srvName("txtonly.example"), dnsTTL, "hello")                                  // NODATA for SRV
	s.SetSRV(srvName("dot.example"), dnsTTL, dnstest.SRV{Priority: 0, Target: "."})        // RFC 2782: no service
	s.SetSRV(srvName("noaddr.example"), dnsTTL, dnstest.SRV{Port: 1, Target: "h.example"}) // target without address
	d := newDNS(t, dns.Config{}, s)

	for _, name := range []string{"nosuch.example", "txtonly.example", "dot.example", "noaddr.example"} {
		_, err := d.Resolve(context.Background(), name)
		require.ErrorIs(t, err, resolve.ErrNotFound, name)
		var e *resolve.Error
		require.ErrorAs(t, err, &e)
		require.Equal(t, "resolve", e.Op)
		require.Equal(t, name, e.Service)
	}
}

func TestDNSTruncatedRetriesOverTCP(t *testing.T) {
	s := dnstest.NewServer(t)
	publish(s, "web.example", 443, "192.0.2.1")
	s.SetMode(dnstest.Mode{Truncate: true})
	d := newDNS(t, dns.Config{}, s)

	eps, err := d.Resolve(context.Background(), "web.example")
	require.NoError(t, err)
	require.Equal(t, []string{"192.0.2.1:443"}, addrsOf(eps))
	require.Equal(t, 2, s.TCPQueries(), "SRV and TXT, each again over TCP")
	require.Equal(t, 4, s.Queries())
}

func TestDNSServerFailure(t *testing.T) {
	for _, rcode := range []dnsmessage.RCode{dnsmessage.RCodeServerFailure, dnsmessage.RCodeRefused} {
		s := dnstest.NewServer(t)
		s.SetMode(dnstest.Mode{RCode: rcode})
		d := newDNS(t, dns.Config{Attempts: 2}, s)

		_, err := d.Resolve(context.Background(), "web.example")
		require.ErrorIs(t, err, dns.ErrFailure)
		require.NotErrorIs(t, err, resolve.ErrNotFound)
		var de *dns.QueryError
		require.ErrorAs(t, err, &de)
		require.Equal(t, rcode, de.RCode)
		require.Equal(t, s.Addr(), de.Server)
		require.False(t, de.Timeout())
		require.Equal(t, 2, s.Count(srvName("web.example"), dnsmessage.TypeSRV), "each attempt")
	}
}

func TestDNSTimeout(t *testing.T) {
	s := dnstest.NewServer(t)
	s.SetMode(dnstest.Mode{Drop: true})
	d := newDNS(t, failFast, s)

	start := time.Now()
	_, err := d.Resolve(context.Background(), "web.example")
	require.Less(t, time.Since(start), time.Second)
	var de *dns.QueryError
	require.ErrorAs(t, err, &de)
	require.True(t, de.Timeout(), "%v", err)
	require.Contains(t, err.Error(), "SRV _roam._udp.web.example.")
}

// The first server is gone: the second answers.
func TestDNSFailover(t *testing.T) {
	dead, live := dnstest.NewServer(t), dnstest.NewServer(t)
	dead.SetMode(dnstest.Mode{Drop: true})
	publish(live, "web.example", 443, "192.0.2.1")
	d := newDNS(t, patient, dead, live)

	eps, err := d.Resolve(context.Background(), "web.example")
	require.NoError(t, err)
	require.Equal(t, []string{"192.0.2.1:443"}, addrsOf(eps))
	require.Positive(t, dead.Queries())
}

// Replies with the wrong ID or question come first; they must be ignored,
// and the real one, which follows, accepted.
func TestDNSIgnoresSpoofedReplies(t *testing.T) {
	s := dnstest.NewServer(t)
	publish(s, "web.example", 443, "192.0.2.1")
	s.SetMode(dnstest.Mode{Spoof: true, NoGlue: true})
	var log bytes.Buffer
	var mu sync.Mutex // queries run in parallel, and so log in parallel
	d := newDNS(t, dns.Config{Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &log}, &slog.HandlerOptions{Level: slog.LevelDebug}))}, s)

	eps, err := d.Resolve(context.Background(), "web.example")
	require.NoError(t, err)
	require.Equal(t, []string{"192.0.2.1:443"}, addrsOf(eps))
	mu.Lock()
	defer mu.Unlock()
	// SRV, TXT, A and AAAA queries: two forgeries each.
	require.Equal(t, 8, strings.Count(log.String(), "ignoring reply"), log.String())
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestDNSContextCancel(t *testing.T) {
	s := dnstest.NewServer(t)
	s.SetMode(dnstest.Mode{Drop: true})
	d := newDNS(t, dns.Config{Timeout: time.Minute}, s)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	_, err := d.Resolve(ctx, "web.example")
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, time.Since(start), time.Second)

	// Close cancels the refresh that the caller left behind, at once.
	start = time.Now()
	require.NoError(t, d.Close())
	require.Less(t, time.Since(start), time.Second)
	_, err = d.Resolve(context.Background(), "web.example")
	require.ErrorIs(t, err, resolve.ErrClosed)
}

func TestDNSInvalidNames(t *testing.T) {
	s := dnstest.NewServer(t)
	d := newDNS(t, dns.Config{}, s)
	for _, name := range []string{
		"has space", "a..b", ".", "x/y", "caf\u00e9", "quote\"", strings.Repeat("a", 64),
		strings.Repeat("abcdefghi.", 25) + "abcd", // 254 bytes with the prefix
	} {
		_, err := d.Resolve(context.Background(), name)
		require.ErrorIs(t, err, resolve.ErrInvalid, "%q", name)
	}
	_, err := d.Resolve(context.Background(), "")
	require.ErrorIs(t, err, resolve.ErrInvalid)
	require.Zero(t, s.Queries(), "no query for garbage")

	// The longest name that fits: 242 bytes, 253 with the prefix.
	_, err = d.Resolve(context.Background(), strings.Repeat("abcdefghi.", 24)+"ab")
	require.ErrorIs(t, err, resolve.ErrNotFound)
}

func TestNewBadServers(t *testing.T) {
	for _, servers := range [][]string{{"nonsense"}, {"192.0.2.1:0"}, {"192.0.2.1:53", "localhost:53"}} {
		_, err := dns.New(dns.Config{Servers: servers})
		require.ErrorIs(t, err, resolve.ErrInvalid, "%q", servers)
	}
	d, err := dns.New(dns.Config{Servers: []string{"127.0.0.1", "[::1]:5353"}})
	require.NoError(t, err, "a bare IP means port 53")
	require.NoError(t, d.Close())
}
