// Package dnstest is a tiny authoritative DNS server for tests: it serves
// an in-memory zone over UDP and TCP on 127.0.0.1, and can be told to
// misbehave (fail, fall silent, truncate, forge replies) so that a client's
// error paths can be tested without any real resolver.
//
// It answers SRV, A, AAAA and TXT questions from the records set on it:
// NXDOMAIN for a name that holds no record at all, an empty answer (NODATA)
// for a name that holds records of other types only. SRV answers carry the
// targets' addresses in the additional section ("glue") unless Mode.NoGlue
// is set. It neither recurses nor follows CNAMEs.
package dnstest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// SRV is one SRV record's data (RFC 2782).
type SRV struct {
	Priority, Weight, Port uint16
	Target                 string // a host name, or "." for "no service here"
}

// Mode says how the server misbehaves. The zero Mode serves the zone.
type Mode struct {
	RCode    dnsmessage.RCode // unless RCodeSuccess, every answer's, with no record
	Drop     bool             // read (and count) queries, answer none: a server gone
	Truncate bool             // UDP answers empty with TC set: the client must use TCP
	NoGlue   bool             // no target addresses in SRV answers
	// Spoof sends two forged UDP replies before each real one: one with the
	// wrong ID, one with the right ID but another question. They answer SRV
	// questions with port 6666 on evil.example., A with 192.0.2.66.
	Spoof bool
}

// rrset is one name's records of one kind, with their common TTL.
type rrset struct {
	ttl   uint32
	srv   []SRV
	addrs []netip.Addr // A and AAAA alike
	txt   []string
}

type rrKey struct {
	name string // lower case, with the trailing dot
	typ  dnsmessage.Type
}

// Server is a running test server. Its methods are safe for concurrent
// use, also while it serves.
type Server struct {
	udp *net.UDPConn
	tcp *net.TCPListener
	wg  sync.WaitGroup

	mu     sync.Mutex
	zone   map[rrKey]rrset
	mode   Mode
	conns  map[net.Conn]struct{}
	counts map[rrKey]int
	total  int
	tcpN   int
	closed bool
}

// Start starts a server on a random loopback port. Tests want NewServer;
// Start is for examples and other code without a testing.TB.
func Start() (*Server, error) {
	s := &Server{zone: make(map[rrKey]rrset), counts: make(map[rrKey]int), conns: make(map[net.Conn]struct{})}
	// TCP listens on the UDP port, as a real server does, so that one Addr
	// names both. That port may be taken for TCP: then try another.
	var err error
	for range 20 {
		if s.udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return nil, err
		}
		port := s.udp.LocalAddr().(*net.UDPAddr).Port
		if s.tcp, err = net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err == nil {
			s.wg.Add(2)
			go s.serveUDP()
			go s.serveTCP()
			return s, nil
		}
		s.udp.Close()
	}
	return nil, err
}

// NewServer starts a server and closes it when the test ends.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s, err := Start()
	if err != nil {
		tb.Fatalf("dnstest: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// Addr returns the server's "ip:port", for UDP and TCP alike.
func (s *Server) Addr() string { return s.udp.LocalAddr().String() }

// Close stops the server and waits for its goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.udp.Close()
		s.tcp.Close()
		for c := range s.conns {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// SetSRV replaces name's SRV records; none removes them.
func (s *Server) SetSRV(name string, ttl time.Duration, recs ...SRV) {
	s.set(name, dnsmessage.TypeSRV, rrset{ttl: seconds(ttl), srv: recs})
}

// SetAddrs replaces name's A and AAAA records with addrs; none removes them.
func (s *Server) SetAddrs(name string, ttl time.Duration, addrs ...netip.Addr) {
	s.set(name, dnsmessage.TypeA, rrset{ttl: seconds(ttl), addrs: addrs})
}

// SetTXT replaces name's TXT records, each of one string; none removes them.
func (s *Server) SetTXT(name string, ttl time.Duration, txt ...string) {
	s.set(name, dnsmessage.TypeTXT, rrset{ttl: seconds(ttl), txt: txt})
}

func (s *Server) set(name string, typ dnsmessage.Type, rs rrset) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := (rrKey{canonical(name), typ}); len(rs.srv)+len(rs.addrs)+len(rs.txt) > 0 {
		s.zone[k] = rs
	} else {
		delete(s.zone, k)
	}
}

// SetMode changes how the server behaves from the next query on.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

// Queries returns how many queries the server has received, over UDP and
// TCP, answered or not.
func (s *Server) Queries() int { return s.count(func() int { return s.total }) }

// TCPQueries returns how many queries came over TCP.
func (s *Server) TCPQueries() int { return s.count(func() int { return s.tcpN }) }

// Count returns how many queries asked for name and type.
func (s *Server) Count(name string, typ dnsmessage.Type) int {
	return s.count(func() int { return s.counts[rrKey{canonical(name), typ}] })
}

func (s *Server) count(f func() int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return f()
}

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed
		}
		for _, msg := range s.handle(buf[:n], false) {
			_, _ = s.udp.WriteToUDPAddrPort(msg, from)
		}
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.closed { // Close has closed the conns it knew: not this one
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// serveConn answers length-prefixed queries (RFC 1035 4.2.2) until the
// client hangs up or Close closes c.
func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	var n [2]byte
	for {
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		for _, msg := range s.handle(q, true) {
			if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)); err != nil {
				return
			}
		}
	}
}

// handle returns the messages to send in reply to query: none for garbage
// or when dropping, forgeries first when spoofing.
func (s *Server) handle(query []byte, overTCP bool) [][]byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	_ = p.SkipAllQuestions()
	_ = p.SkipAllAnswers()
	_ = p.SkipAllAuthorities()
	_, err = p.AdditionalHeader()
	edns := err == nil // the one additional record a client sends is OPT

	s.mu.Lock()
	defer s.mu.Unlock()
	s.total++
	if overTCP {
		s.tcpN++
	}
	s.counts[rrKey{canonical(q.Name.String()), q.Type}]++
	if s.mode.Drop {
		return nil
	}
	var out [][]byte
	if s.mode.Spoof && !overTCP {
		other := q
		other.Name = dnsmessage.MustNewName("forged.example.")
		out = append(out, s.build(h.ID+1, q, false, false, forged(canonical(q.Name.String()))),
			s.build(h.ID, other, false, false, forged("forged.example.")))
	}
	return append(out, s.build(h.ID, q, edns, s.mode.Truncate && !overTCP, s.zone))
}

// forged is the zone of forged replies: an SRV and an A record everywhere.
func forged(name string) map[rrKey]rrset {
	rs := rrset{ttl: 3600, srv: []SRV{{Port: 6666, Target: "evil.example."}}, addrs: []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, 66})}}
	return map[rrKey]rrset{{name, dnsmessage.TypeSRV}: rs, {name, dnsmessage.TypeA}: rs}
}

// build answers q from zone. s.mu must be held.
func (s *Server) build(id uint16, q dnsmessage.Question, edns, truncated bool, zone map[rrKey]rrset) []byte {
	name := canonical(q.Name.String())
	h := dnsmessage.Header{ID: id, Response: true, Authoritative: true, RecursionDesired: true, RCode: s.mode.RCode, Truncated: truncated}
	_, srv := zone[rrKey{name, dnsmessage.TypeSRV}]
	_, a := zone[rrKey{name, dnsmessage.TypeA}]
	_, txt := zone[rrKey{name, dnsmessage.TypeTXT}]
	if h.RCode == dnsmessage.RCodeSuccess && !srv && !a && !txt {
		h.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	must(b.StartQuestions())
	must(b.Question(q))
	must(b.StartAnswers())
	var glue []string
	if h.RCode == dnsmessage.RCodeSuccess && !truncated {
		typ := q.Type
		if typ == dnsmessage.TypeAAAA {
			typ = dnsmessage.TypeA // A and AAAA share an rrset
		}
		rs := zone[rrKey{name, typ}]
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: rs.ttl}
		switch q.Type {
		case dnsmessage.TypeSRV:
			for _, r := range rs.srv {
				must(b.SRVResource(rh, dnsmessage.SRVResource{Priority: r.Priority, Weight: r.Weight, Port: r.Port, Target: dnsmessage.MustNewName(canonical(r.Target))}))
				glue = append(glue, canonical(r.Target))
			}
		case dnsmessage.TypeA, dnsmessage.TypeAAAA:
			addAddrs(&b, rh, rs.addrs, q.Type)
		case dnsmessage.TypeTXT:
			for _, t := range rs.txt {
				must(b.TXTResource(rh, dnsmessage.TXTResource{TXT: []string{t}}))
			}
		}
	}
	must(b.StartAdditionals())
	for _, t := range glue {
		if rs, ok := zone[rrKey{t, dnsmessage.TypeA}]; ok && !s.mode.NoGlue {
			rh := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(t), Class: dnsmessage.ClassINET, TTL: rs.ttl}
			addAddrs(&b, rh, rs.addrs, dnsmessage.TypeA)
			addAddrs(&b, rh, rs.addrs, dnsmessage.TypeAAAA)
		}
	}
	if edns { // echo EDNS0, as a server that speaks it does
		var opt dnsmessage.ResourceHeader
		must(opt.SetEDNS0(1232, dnsmessage.RCodeSuccess, false))
		must(b.OPTResource(opt, dnsmessage.OPTResource{}))
	}
	msg, err := b.Finish()
	must(err)
	return msg
}

func addAddrs(b *dnsmessage.Builder, rh dnsmessage.ResourceHeader, addrs []netip.Addr, typ dnsmessage.Type) {
	for _, a := range addrs {
		switch {
		case typ == dnsmessage.TypeA && a.Is4():
			must(b.AResource(rh, dnsmessage.AResource{A: a.As4()}))
		case typ == dnsmessage.TypeAAAA && a.Is6():
			must(b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()}))
		}
	}
}

// canonical lowers name and gives it its trailing dot, so that "Web.Example"
// and "web.example." are one name.
func canonical(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

func seconds(d time.Duration) uint32 { return uint32(d / time.Second) }

// must panics on a builder error: the zone is the test's own, so an error
// is a bug in the test, such as a name longer than DNS allows.
func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("dnstest: %v", err))
	}
}
