package dns

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/roamnet/roam/resolve"
)

// QueryError is a DNS query that got no usable answer; errors.Is(err,
// ErrFailure) holds for it. When several servers or attempts failed, it
// describes the last one.
type QueryError struct {
	// Server is the "ip:port" of the server asked.
	Server string
	// Name and Type are the question, such as "_roam._udp.web.example." SRV.
	Name string
	Type dnsmessage.Type
	// RCode is the server's response code when the server answered with a
	// failure, such as dnsmessage.RCodeServerFailure; RCodeSuccess when it
	// did not answer usefully at all (then Err says why).
	RCode dnsmessage.RCode
	// Err is the cause when RCode is not: a timeout (a net.Error whose
	// Timeout method reports true), a network error or a malformed reply.
	Err error
}

func (e *QueryError) Error() string {
	q := typeName(e.Type) + " " + e.Name
	if e.RCode != dnsmessage.RCodeSuccess {
		return fmt.Sprintf("dns: %s: server %s answered %s", q, e.Server, rcodeName(e.RCode))
	}
	return fmt.Sprintf("dns: %s: server %s: %v", q, e.Server, e.Err)
}

// Unwrap returns the cause, if any.
func (e *QueryError) Unwrap() error { return e.Err }

// Is makes every QueryError match ErrFailure.
func (e *QueryError) Is(target error) bool { return target == ErrFailure }

// Timeout reports whether the server did not answer in time.
func (e *QueryError) Timeout() bool {
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

func rcodeName(r dnsmessage.RCode) string {
	switch r {
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("RCODE %d", r)
}

func typeName(t dnsmessage.Type) string {
	switch t {
	case dnsmessage.TypeSRV:
		return "SRV"
	case dnsmessage.TypeA:
		return "A"
	case dnsmessage.TypeAAAA:
		return "AAAA"
	case dnsmessage.TypeTXT:
		return "TXT"
	}
	return t.String()
}

var (
	// errDNSMismatch marks a reply to some other query. Over UDP it may be
	// forged, so it is ignored rather than trusted or treated as failure.
	errDNSMismatch  = errors.New("reply does not match the query")
	errDNSMalformed = errors.New("malformed reply")
)

// ednsSize is the UDP payload size we advertise: the DNS flag day 2020
// value, which avoids IP fragmentation on practically every path.
const ednsSize = 1232

// udpBufs holds read buffers big enough for any UDP datagram, so that a
// server that ignores ednsSize is read whole rather than cut; a cut reply
// would fail to parse and be waited out as if forged.
var udpBufs = sync.Pool{New: func() any { b := make([]byte, 65535); return &b }}

// dnsRR is one resource record of a reply, reduced to what roam uses.
type dnsRR struct {
	name   string // lower case, with the trailing dot
	typ    dnsmessage.Type
	ttl    uint32
	target string     // SRV and CNAME: lower case, with the trailing dot
	prio   uint16     // SRV
	weight uint16     // SRV
	port   uint16     // SRV
	addr   netip.Addr // A and AAAA
	txt    []string   // TXT
}

// dnsReply is a parsed reply: its answer section and, from the additional
// section, the A and AAAA records (glue).
type dnsReply struct {
	rcode     dnsmessage.RCode
	truncated bool
	answers   []dnsRR
	glue      []dnsRR
}

// parseDNSReply parses msg as the reply to the query with this id and
// question. It returns errDNSMismatch (wrapped) for a reply to anything
// else, and errDNSMalformed (wrapped) for one that does not parse. It must
// not panic whatever msg holds: FuzzParseDNSReply checks that.
func parseDNSReply(msg []byte, id uint16, q dnsmessage.Question) (*dnsReply, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil, wrapMalformed(err)
	}
	if h.ID != id || !h.Response {
		return nil, fmt.Errorf("%w: id %d, response %t", errDNSMismatch, h.ID, h.Response)
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, wrapMalformed(err)
	}
	if len(qs) != 1 || qs[0].Type != q.Type || qs[0].Class != q.Class ||
		lowerASCII(qs[0].Name.String()) != lowerASCII(q.Name.String()) {
		return nil, fmt.Errorf("%w: question %v", errDNSMismatch, qs)
	}
	r := &dnsReply{rcode: h.RCode, truncated: h.Truncated}
	if h.Truncated {
		return r, nil // the rest may be cut anywhere: ask again over TCP
	}
	if r.answers, err = parseSection(&p, p.AnswerHeader, p.SkipAnswer); err != nil {
		return nil, err
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return nil, wrapMalformed(err)
	}
	extra, err := parseSection(&p, p.AdditionalHeader, p.SkipAdditional)
	if err != nil {
		return nil, err
	}
	for _, rr := range extra {
		if rr.typ == dnsmessage.TypeA || rr.typ == dnsmessage.TypeAAAA {
			r.glue = append(r.glue, rr)
		}
	}
	return r, nil
}

// parseSection reads the records of one section (next and skip are the
// parser's methods for it), keeping the kinds roam uses.
func parseSection(p *dnsmessage.Parser, next func() (dnsmessage.ResourceHeader, error), skip func() error) ([]dnsRR, error) {
	var rrs []dnsRR
	for {
		h, err := next()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return rrs, nil
		}
		if err != nil {
			return nil, wrapMalformed(err)
		}
		rr := dnsRR{name: lowerASCII(h.Name.String()), typ: h.Type, ttl: h.TTL}
		switch {
		case h.Class != dnsmessage.ClassINET:
			err = skip()
			rr.typ = 0 // not ours
		case h.Type == dnsmessage.TypeSRV:
			var b dnsmessage.SRVResource
			b, err = p.SRVResource()
			rr.prio, rr.weight, rr.port, rr.target = b.Priority, b.Weight, b.Port, lowerASCII(b.Target.String())
		case h.Type == dnsmessage.TypeCNAME:
			var b dnsmessage.CNAMEResource
			b, err = p.CNAMEResource()
			rr.target = lowerASCII(b.CNAME.String())
		case h.Type == dnsmessage.TypeA:
			var b dnsmessage.AResource
			b, err = p.AResource()
			rr.addr = netip.AddrFrom4(b.A)
		case h.Type == dnsmessage.TypeAAAA:
			var b dnsmessage.AAAAResource
			b, err = p.AAAAResource()
			rr.addr = netip.AddrFrom16(b.AAAA).Unmap()
		case h.Type == dnsmessage.TypeTXT:
			var b dnsmessage.TXTResource
			b, err = p.TXTResource()
			rr.txt = b.TXT
		default:
			err = skip()
			rr.typ = 0
		}
		if err != nil {
			return nil, wrapMalformed(err)
		}
		if rr.typ != 0 {
			rrs = append(rrs, rr)
		}
	}
}

func wrapMalformed(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %v", errDNSMalformed, err)
}

// lowerASCII folds A-Z only: DNS compares names without regard to ASCII
// case, and other bytes must stay as they are (strings.ToLower would turn
// invalid UTF-8 into U+FFFD).
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// buildQuery returns a recursive query for q with an EDNS0 OPT record.
func buildQuery(id uint16, q dnsmessage.Question) ([]byte, error) {
	b := dnsmessage.NewBuilder(make([]byte, 2, 64), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(ednsSize, dnsmessage.RCodeSuccess, false); err != nil {
		return nil, err
	}
	if err := b.OPTResource(opt, dnsmessage.OPTResource{}); err != nil {
		return nil, err
	}
	msg, err := b.Finish()
	if err != nil {
		return nil, err
	}
	// The first two bytes are room for TCP's length prefix.
	binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
	return msg, nil
}

// exchange asks server one question, over UDP and, if the answer is
// truncated, again over TCP. Each query has its own random ID and, as each
// dials anew, its own random source port.
func (d *Resolver) exchange(ctx context.Context, server netip.AddrPort, q dnsmessage.Question) (*dnsReply, error) {
	var idb [2]byte
	_, _ = rand.Read(idb[:]) // never fails (crypto/rand, Go 1.24+)
	id := binary.BigEndian.Uint16(idb[:])
	msg, err := buildQuery(id, q)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", resolve.ErrInvalid, err)
	}
	r, err := d.roundTrip(ctx, "udp", server, id, q, msg)
	if err == nil && r.truncated {
		r, err = d.roundTrip(ctx, "tcp", server, id, q, msg)
		if err == nil && r.truncated {
			return nil, fmt.Errorf("%w: truncated over TCP", errDNSMalformed)
		}
	}
	return r, err
}

// roundTrip sends msg (prefixed by its length) over network and waits at
// most d.timeout for the reply. Over UDP, replies that do not match are
// dropped and the wait goes on, so a forger must also beat the real server.
func (d *Resolver) roundTrip(ctx context.Context, network string, server netip.AddrPort, id uint16, q dnsmessage.Question, msg []byte) (*dnsReply, error) {
	deadline := time.Now().Add(d.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	dialer := net.Dialer{Deadline: deadline}
	c, err := dialer.DialContext(ctx, network, server.String())
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	defer c.Close()
	// A deadline in the past wakes any blocked read when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	_ = c.SetDeadline(deadline)

	if network == "tcp" {
		if _, err := c.Write(msg); err != nil {
			return nil, ctxErr(ctx, err)
		}
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return nil, ctxErr(ctx, err)
		}
		reply := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, reply); err != nil {
			return nil, ctxErr(ctx, err)
		}
		// On a connection we opened, a mismatch is not a forgery to wait
		// out but a broken server.
		return parseDNSReply(reply, id, q)
	}

	if _, err := c.Write(msg[2:]); err != nil {
		return nil, ctxErr(ctx, err)
	}
	bp := udpBufs.Get().(*[]byte)
	defer udpBufs.Put(bp)
	for {
		n, err := c.Read(*bp)
		if err != nil {
			return nil, ctxErr(ctx, err)
		}
		r, err := parseDNSReply((*bp)[:n], id, q)
		if err == nil {
			return r, nil
		}
		d.log.Debug("dns: ignoring reply", "server", server, "name", q.Name.String(), "err", err)
	}
}

// ctxErr prefers the context's cause to the error it provoked.
func ctxErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	return err
}
