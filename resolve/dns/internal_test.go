package dns

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/roamnet/roam/resolve"
)

func TestParseResolvConf(t *testing.T) {
	got, err := parseResolvConf(`# written by NetworkManager
; also a comment
search example.com
options ndots:2 timeout:1
nameserver 192.0.2.53
  nameserver   2001:db8::53   # trailing words are ignored
nameserver fe80::1%eth0
nameserver ::ffff:192.0.2.54
#nameserver 192.0.2.99
nameserver not-an-address
nameserver
`)
	require.NoError(t, err)
	require.Equal(t, []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.53:53"),
		netip.MustParseAddrPort("[2001:db8::53]:53"),
		netip.MustParseAddrPort("[fe80::1%eth0]:53"),
		netip.MustParseAddrPort("192.0.2.54:53"),
	}, got)

	_, err = parseResolvConf("search example.com\n")
	require.ErrorContains(t, err, "no nameserver line")
	_, err = parseResolvConf("nameserver bogus\n")
	require.ErrorContains(t, err, `could not parse ["nameserver bogus"]`)
}

func TestReadResolvConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	require.NoError(t, os.WriteFile(path, []byte("nameserver 192.0.2.53\n"), 0o600))
	got, err := readResolvConf(path)
	require.NoError(t, err)
	require.Equal(t, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}, got)

	_, err = readResolvConf(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "cannot read the system resolver configuration (set dns.Config.Servers instead)")

	require.NoError(t, os.WriteFile(path, []byte("# empty\n"), 0o600))
	_, err = readResolvConf(path)
	require.ErrorContains(t, err, path+": no nameserver line")
}

func TestDNSQueryName(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"web", "_roam._udp.web."},
		{"web.example.", "_roam._udp.web.example."},
		{"rk--" + strings.Repeat("a", 52) + ".echo.demo", "_roam._udp.rk--" + strings.Repeat("a", 52) + ".echo.demo."},
		{"under_score", "_roam._udp.under_score."},
		{strings.Repeat("a", 63), "_roam._udp." + strings.Repeat("a", 63) + "."},
	} {
		got, err := dnsQueryName(tt.in)
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got)
	}
	for _, in := range []string{"", ".", "a..b", ".a", "a b", "a\x00", "ü", "A", strings.Repeat("a", 64), strings.Repeat("a.", 121) + "a"} {
		_, err := dnsQueryName(in)
		require.ErrorIs(t, err, resolve.ErrInvalid, "%q", in)
	}
}

func TestOrderSRV(t *testing.T) {
	recs := []srvRec{
		{prio: 20, weight: 1, target: "c"},
		{prio: 10, weight: 30, target: "a1"},
		{prio: 10, weight: 0, target: "a0"},
		{prio: 10, weight: 10, target: "a2"},
	}
	targets := func(rs []srvRec) (out []string) {
		for _, r := range rs {
			out = append(out, r.target)
		}
		return out
	}
	// Zero draws pick the zero weight first, then the list order.
	require.Equal(t, []string{"a0", "a1", "a2", "c"}, targets(orderSRV(recs, func(int) int { return 0 })))
	// The highest draw picks the last record of the running sum.
	require.Equal(t, []string{"a2", "a1", "a0", "c"}, targets(orderSRV(recs, func(n int) int { return n - 1 })))
	require.Equal(t, "c", recs[0].target, "the input is not reordered")

	// Over many draws, a record comes first in proportion to its weight.
	rng := rand.New(rand.NewPCG(1, 2))
	first := map[string]int{}
	const n = 20000
	for range n {
		first[orderSRV(recs, rng.IntN)[0].target]++
	}
	require.InDelta(t, 30.0/41, float64(first["a1"])/n, 0.02)
	require.InDelta(t, 10.0/41, float64(first["a2"])/n, 0.02)
	require.InDelta(t, 1.0/41, float64(first["a0"])/n, 0.01)
}

func txtReply(ttl uint32, txt ...[]string) *dnsReply {
	r := &dnsReply{}
	for _, t := range txt {
		r.answers = append(r.answers, dnsRR{name: "_roam._udp.web.", typ: dnsmessage.TypeTXT, ttl: ttl, txt: t})
	}
	return r
}

func TestPinFromTXT(t *testing.T) {
	fp := resolve.Fingerprint{7}
	for _, tt := range []struct {
		name    string
		r       *dnsReply
		want    resolve.Fingerprint
		wantTTL uint32
	}{
		{"none", txtReply(60), resolve.Fingerprint{}, math.MaxUint32},
		{"unrelated", txtReply(60, []string{"v=spf1", "keyed=x"}, []string{"hello"}), resolve.Fingerprint{}, math.MaxUint32},
		{"pin", txtReply(60, []string{"v=1"}, []string{"key=" + fp.String()}), fp, 60},
		{"upper case, spaces", txtReply(60, []string{" KEY = " + strings.ToUpper(fp.String())}), fp, 60},
		{"same pin twice", txtReply(60, []string{"key=" + fp.String(), "key=" + fp.String()}), fp, 60},
		{"nxdomain", &dnsReply{rcode: dnsmessage.RCodeNameError}, resolve.Fingerprint{}, math.MaxUint32},
	} {
		got, ttl, err := pinFromTXT(tt.r, "_roam._udp.web.")
		require.NoError(t, err, tt.name)
		require.Equal(t, tt.want, got, tt.name)
		require.Equal(t, tt.wantTTL, ttl, tt.name)
	}
	for _, r := range []*dnsReply{
		txtReply(60, []string{"key="}),
		txtReply(60, []string{"key=" + fp.String()[:51]}),
		txtReply(60, []string{"key=" + fp.String()}, []string{"key=" + resolve.Fingerprint{8}.String()}),
	} {
		_, _, err := pinFromTXT(r, "_roam._udp.web.")
		require.ErrorIs(t, err, resolve.ErrInvalidFingerprint)
	}
	// A zero pin would read as none, downgrading the service to an
	// unauthenticated one: it is an error like any other bad pin.
	for _, r := range []*dnsReply{
		txtReply(60, []string{"key=" + resolve.Fingerprint{}.String()}),
		txtReply(60, []string{"key=" + fp.String()}, []string{"key=" + resolve.Fingerprint{}.String()}),
	} {
		_, _, err := pinFromTXT(r, "_roam._udp.web.")
		require.ErrorIs(t, err, resolve.ErrZeroFingerprint)
	}
}

var testQuestion = dnsmessage.Question{Name: dnsmessage.MustNewName("_roam._udp.web.example."), Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET}

func pack(tb testing.TB, m dnsmessage.Message) []byte {
	tb.Helper()
	b, err := m.Pack()
	require.NoError(tb, err)
	return b
}

func rh(name string, ttl uint32) dnsmessage.ResourceHeader {
	return dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Class: dnsmessage.ClassINET, TTL: ttl}
}

// testReplies are well-formed replies to testQuestion, ID 1: the fuzzer's
// seeds, and the cases of TestParseDNSReply.
func testReplies(tb testing.TB) map[string][]byte {
	h := dnsmessage.Header{ID: 1, Response: true}
	q := []dnsmessage.Question{testQuestion}
	a := netip.MustParseAddr("192.0.2.1").As4()
	return map[string][]byte{
		"glue": pack(tb, dnsmessage.Message{Header: h, Questions: q,
			Answers:     []dnsmessage.Resource{{Header: rh("_roam._udp.WEB.example.", 60), Body: &dnsmessage.SRVResource{Priority: 1, Weight: 2, Port: 443, Target: dnsmessage.MustNewName("H.example.")}}},
			Authorities: []dnsmessage.Resource{{Header: rh("example.", 60), Body: &dnsmessage.NSResource{NS: dnsmessage.MustNewName("ns.example.")}}},
			Additionals: []dnsmessage.Resource{
				{Header: rh("h.example.", 30), Body: &dnsmessage.AResource{A: a}},
				{Header: rh("h.example.", 30), Body: &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("::ffff:192.0.2.2").As16()}},
				{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("h.example."), Class: dnsmessage.ClassCHAOS}, Body: &dnsmessage.AResource{A: a}},
			}}),
		"cname": pack(tb, dnsmessage.Message{Header: h, Questions: q, Answers: []dnsmessage.Resource{
			{Header: rh("_roam._udp.web.example.", 50), Body: &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("alias.example.")}},
			{Header: rh("alias.example.", 40), Body: &dnsmessage.SRVResource{Port: 443, Target: dnsmessage.MustNewName("h.example.")}},
			{Header: rh("other.example.", 10), Body: &dnsmessage.SRVResource{Port: 666, Target: dnsmessage.MustNewName("evil.example.")}},
			{Header: rh("alias.example.", 40), Body: &dnsmessage.TXTResource{TXT: []string{"key=" + resolve.Fingerprint{9}.String()}}},
			{Header: rh("alias.example.", 40), Body: &dnsmessage.MXResource{MX: dnsmessage.MustNewName("mx.example.")}},
		}}),
		"nxdomain":  pack(tb, dnsmessage.Message{Header: dnsmessage.Header{ID: 1, Response: true, RCode: dnsmessage.RCodeNameError}, Questions: q}),
		"truncated": pack(tb, dnsmessage.Message{Header: dnsmessage.Header{ID: 1, Response: true, Truncated: true}, Questions: q}),
	}
}

func TestParseDNSReply(t *testing.T) {
	msgs := testReplies(t)
	r, err := parseDNSReply(msgs["glue"], 1, testQuestion)
	require.NoError(t, err)
	require.Equal(t, []dnsRR{{name: "_roam._udp.web.example.", typ: dnsmessage.TypeSRV, ttl: 60, prio: 1, weight: 2, port: 443, target: "h.example."}}, r.answers)
	h, ok := glueFor(r, "h.example.")
	require.True(t, ok)
	require.Equal(t, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}, h.addrs, "CHAOS ignored, 4in6 unmapped")
	require.Equal(t, uint32(30), h.ttl)

	r, err = parseDNSReply(msgs["cname"], 1, testQuestion)
	require.NoError(t, err)
	srvs, ttl := records(r.answers, "_roam._udp.web.example.", dnsmessage.TypeSRV)
	require.Len(t, srvs, 1, "only what the CNAME chain leads to")
	require.Equal(t, "h.example.", srvs[0].target)
	require.Equal(t, uint32(40), ttl)
	pin, _, err := pinFromTXT(r, "_roam._udp.web.example.")
	require.NoError(t, err)
	require.Equal(t, resolve.Fingerprint{9}, pin)

	r, err = parseDNSReply(msgs["nxdomain"], 1, testQuestion)
	require.NoError(t, err)
	require.Equal(t, dnsmessage.RCodeNameError, r.rcode)
	r, err = parseDNSReply(msgs["truncated"], 1, testQuestion)
	require.NoError(t, err)
	require.True(t, r.truncated)

	// Replies to another query.
	_, err = parseDNSReply(msgs["glue"], 2, testQuestion)
	require.ErrorIs(t, err, errDNSMismatch, "wrong ID")
	other := testQuestion
	other.Type = dnsmessage.TypeA
	_, err = parseDNSReply(msgs["glue"], 1, other)
	require.ErrorIs(t, err, errDNSMismatch, "wrong question")
	query, err := buildQuery(1, testQuestion)
	require.NoError(t, err)
	_, err = parseDNSReply(query[2:], 1, testQuestion)
	require.ErrorIs(t, err, errDNSMismatch, "a query, not a reply")

	// Cut anywhere, a reply is malformed (or, cut in the header, short).
	glue := msgs["glue"]
	for n := range len(glue) {
		_, err := parseDNSReply(glue[:n], 1, testQuestion)
		require.ErrorIs(t, err, errDNSMalformed, "cut at %d", n)
	}
}

// FuzzParseDNSReply checks that no reply, however broken, panics the
// parser or the code that reads its records. The ID and question are
// taken from the input, so that the fuzzer gets past the matching.
func FuzzParseDNSReply(f *testing.F) {
	for _, m := range testReplies(f) {
		f.Add(m)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0x80, 0, 0, 1, 0, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		var p dnsmessage.Parser
		h, err := p.Start(msg)
		if err != nil {
			_, err := parseDNSReply(msg, 0, testQuestion)
			require.Error(t, err)
			return
		}
		q, err := p.Question()
		if err != nil {
			q = testQuestion
		}
		r, err := parseDNSReply(msg, h.ID, q)
		if err != nil {
			return
		}
		name := lowerASCII(q.Name.String())
		srvs, _ := records(r.answers, name, dnsmessage.TypeSRV)
		var recs []srvRec
		for _, rr := range srvs {
			recs = append(recs, srvRec{rr.prio, rr.weight, rr.port, rr.target})
			glueFor(r, rr.target)
		}
		require.Len(t, orderSRV(recs, rand.IntN), len(recs))
		_, _, _ = pinFromTXT(r, name)
	})
}

func TestDNSErrorString(t *testing.T) {
	e := &QueryError{Server: "192.0.2.53:53", Name: "_roam._udp.web.", Type: dnsmessage.TypeSRV, RCode: dnsmessage.RCodeServerFailure}
	require.Equal(t, "dns: SRV _roam._udp.web.: server 192.0.2.53:53 answered SERVFAIL", e.Error())
	e = &QueryError{Server: "192.0.2.53:53", Name: "h.", Type: dnsmessage.TypeAAAA, Err: os.ErrDeadlineExceeded}
	require.Equal(t, "dns: AAAA h.: server 192.0.2.53:53: i/o timeout", e.Error())
	require.True(t, e.Timeout())
	require.ErrorIs(t, e, ErrFailure)
	require.ErrorIs(t, e, os.ErrDeadlineExceeded)
}

// The memory of answers grows with the services asked for, and sheds
// those past their stale window whenever it doubles.
func TestDNSSweepsDeadEntries(t *testing.T) {
	d, err := New(Config{Servers: []string{"127.0.0.1:53"}, MaxStale: time.Minute}) // nothing is sent
	require.NoError(t, err)
	defer d.Close()
	now := time.Now()
	for i := range 1023 {
		d.store(fmt.Sprint("dead", i), &dnsEntry{expires: now.Add(-2 * time.Minute)}, now)
	}
	d.store("stale", &dnsEntry{expires: now.Add(-time.Second)}, now)
	require.Len(t, d.entries, 1, "the 1024th entry swept the dead")
	require.Contains(t, d.entries, "stale")
	require.Equal(t, 1024, d.sweepAt)
}
