package resolve_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

func TestNewStatic(t *testing.T) {
	ap := netip.MustParseAddrPort
	in := map[string][]netip.AddrPort{
		"Web":   {ap("10.0.0.1:443")},
		"web":   {ap("10.0.0.2:443")}, // folds onto "Web": merged, sorted key order
		"db":    {ap("[fd00::5]:5432"), {}, ap("10.0.0.9:0")},
		"empty": {{}},
		"":      {ap("10.0.0.3:443")},
	}
	r := resolve.NewStatic(in)
	require.IsType(t, (*resolve.Static)(nil), r)
	in["db"][0] = ap("10.9.9.9:1") // the table is a copy

	tests := []struct {
		service string
		want    []resolve.Endpoint
	}{
		{"web", []resolve.Endpoint{ep("10.0.0.1:443"), ep("10.0.0.2:443")}},
		{"WEB", []resolve.Endpoint{ep("10.0.0.1:443"), ep("10.0.0.2:443")}},
		{"db", []resolve.Endpoint{ep("[fd00::5]:5432")}},
		{"empty", nil},
		{"absent", nil},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			got, err := r.Resolve(context.Background(), tt.service)
			if tt.want == nil {
				require.ErrorIs(t, err, resolve.ErrNotFound)
				var e *resolve.Error
				require.ErrorAs(t, err, &e)
				require.Equal(t, strings.ToLower(tt.service), e.Service)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

var parseStaticOK = []struct {
	in   string
	want string // String() of the result
}{
	{"", ""},
	{"web=10.0.0.1:443", "web=10.0.0.1:443"},
	{" Web = 10.0.0.1:443 , 10.0.0.2:443 ; db=[fd00::5]:5432 ;", "db=[fd00::5]:5432;web=10.0.0.1:443,10.0.0.2:443"},
	{"a=127.0.0.1:1;\n;\nb=[::1]:2", "a=127.0.0.1:1;b=[::1]:2"},
	{"svc.example=[fe80::1%eth0]:443", "svc.example=[fe80::1%eth0]:443"},
	{"x=[::ffff:1.2.3.4]:80", "x=[::ffff:1.2.3.4]:80"},
}

var parseStaticBad = []struct {
	in      string
	wantErr string
}{
	{"web", `entry 1 "web": want name=ip:port[,ip:port...]`},
	{"=10.0.0.1:443", `entry 1 "=10.0.0.1:443": empty service name`},
	{"my web=10.0.0.1:443", `contains a space or control character`},
	{"a,b=10.0.0.1:443", `contains one of ,;=`},
	{"web=", `entry 1 "web=": address 1 is empty`},
	{"web=10.0.0.1:443,,10.0.0.2:443", `address 2 is empty`},
	{"web=10.0.0.1", `address 1 "10.0.0.1": want ip:port or [ipv6]:port`},
	{"web=::1:443", `address 1 "::1:443": want ip:port`},
	{"web=example.com:443", `address 1 "example.com:443"`},
	{"web=10.0.0.1:0", `address 1 "10.0.0.1:0": port 0`},
	{"web=10.0.0.1:443,10.0.0.1:443", `address 2 "10.0.0.1:443": listed twice`},
	{"web=10.0.0.1:443;;WEB=10.0.0.2:443", `entry 3 "WEB=10.0.0.2:443": service "web" already defined by entry 1`},
	{"web=10.0.0.1:443=x", `address 1 "10.0.0.1:443=x"`},
	{"w\xffb=10.0.0.1:443", `not UTF-8`},
}

func TestParseStatic(t *testing.T) {
	for _, tt := range parseStaticOK {
		t.Run(tt.in, func(t *testing.T) {
			s, err := resolve.ParseStatic(tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.want, s.String())
		})
	}
	for _, tt := range parseStaticBad {
		t.Run(tt.in, func(t *testing.T) {
			_, err := resolve.ParseStatic(tt.in)
			require.ErrorIs(t, err, resolve.ErrInvalid)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestParseStaticResolves(t *testing.T) {
	s, err := resolve.ParseStatic("Web=10.0.0.1:443,[::1]:443")
	require.NoError(t, err)
	got, err := s.Resolve(context.Background(), "WEB")
	require.NoError(t, err)
	require.Equal(t, []resolve.Endpoint{ep("10.0.0.1:443"), ep("[::1]:443")}, got)
}

// FuzzParseStatic checks that the parser never panics and that whatever it
// accepts, String writes back in a form that parses to the same table.
// The seeds run as an ordinary test.
func FuzzParseStatic(f *testing.F) {
	for _, tt := range parseStaticOK {
		f.Add(tt.in)
	}
	for _, tt := range parseStaticBad {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := resolve.ParseStatic(in)
		if err != nil {
			require.ErrorIs(t, err, resolve.ErrInvalid)
			return
		}
		text := s.String()
		again, err := resolve.ParseStatic(text)
		require.NoError(t, err, "String wrote %q", text)
		require.Equal(t, text, again.String())
		for entry := range strings.SplitSeq(text, ";") {
			name, _, _ := strings.Cut(entry, "=")
			if name == "" {
				continue
			}
			eps, err := s.Resolve(context.Background(), name)
			require.NoError(t, err, "service %q", name)
			require.NotEmpty(t, eps)
		}
	})
}
