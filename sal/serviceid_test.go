package sal

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

var (
	testFP  = resolve.Fingerprint(sha256.Sum256([]byte("key one")))
	testFP2 = resolve.Fingerprint(sha256.Sum256([]byte("key two")))
	testKL  = keyLabelPrefix + testFP.String()  // a valid key label
	testKL2 = keyLabelPrefix + testFP2.String() // another one
)

// nonCanonical returns fp's text with stray bits set in its last
// character: it decodes to the same bytes, so must be refused.
func nonCanonical(fp resolve.Fingerprint) string {
	s := fp.String()
	last := "abcdefghijklmnopqrstuvwxyz234567"[b32val[s[len(s)-1]]|1]
	return s[:len(s)-1] + string(last)
}

// idOfLen returns a valid name of total bytes: labels of 'a' at most 63
// bytes long.
func idOfLen(total int) string {
	var parts []string
	for left := total; left > 0; left -= maxLabelLen + 1 {
		parts = append(parts, strings.Repeat("a", min(left, maxLabelLen)))
	}
	s := strings.Join(parts, ".")
	if len(s) != total {
		panic("idOfLen: no such name") // a label would be empty
	}
	return s
}

func TestParseServiceIDValid(t *testing.T) {
	for _, tc := range []struct {
		in, want, name string
		key            resolve.Fingerprint
	}{
		{"echo.demo", "echo.demo", "echo.demo", resolve.Fingerprint{}},
		{"Echo.DEMO.", "echo.demo", "echo.demo", resolve.Fingerprint{}},
		{"a", "a", "a", resolve.Fingerprint{}},
		{"0.9-x.xn--bcher-kva.a--b.rk-a", "0.9-x.xn--bcher-kva.a--b.rk-a", "0.9-x.xn--bcher-kva.a--b.rk-a", resolve.Fingerprint{}},
		{"123.456", "123.456", "123.456", resolve.Fingerprint{}},
		{testKL + ".echo.demo", testKL + ".echo.demo", "echo.demo", testFP},
		{testKL, testKL, "", testFP},
		{testKL + ".", testKL, "", testFP},
		{strings.ToUpper(testKL) + ".Echo", testKL + ".echo", "echo", testFP},
		{strings.Repeat("a", 63), strings.Repeat("a", 63), strings.Repeat("a", 63), resolve.Fingerprint{}},
		{idOfLen(253), idOfLen(253), idOfLen(253), resolve.Fingerprint{}},
		{idOfLen(253) + ".", idOfLen(253), idOfLen(253), resolve.Fingerprint{}},
		{testKL + "." + idOfLen(253-57), testKL + "." + idOfLen(253-57), idOfLen(253 - 57), testFP},
	} {
		id, err := ParseServiceID(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, id.String(), tc.in)
		require.Equal(t, tc.name, id.Name(), tc.in)
		key, ok := id.Key()
		require.Equal(t, tc.key, key, tc.in)
		require.Equal(t, !tc.key.IsZero(), ok, tc.in)
		require.False(t, id.IsZero())
		require.Equal(t, id, MustParseServiceID(id.String()))
	}
}

func TestParseServiceIDErrors(t *testing.T) {
	long := strings.Repeat("a", 64)
	for _, tc := range []struct {
		in   string
		kind IDErrorKind
		pos  int
	}{
		{"", IDErrEmpty, -1},
		{".", IDErrEmpty, -1},
		{idOfLen(254), IDErrTooLong, -1},
		{idOfLen(254) + ".", IDErrTooLong, -1},
		{strings.Repeat("a.", 1<<19), IDErrTooLong, -1},
		{testKL + "." + idOfLen(253-56), IDErrTooLong, -1},
		{"a..b", IDErrEmptyLabel, 2},
		{".a", IDErrEmptyLabel, 0},
		{"..", IDErrEmptyLabel, 0},
		{"a..", IDErrEmptyLabel, 2},
		{long, IDErrLabelTooLong, 0},
		{"x." + long + ".y", IDErrLabelTooLong, 2},
		{"ec ho.demo", IDErrInvalidChar, 2},
		{"a_b", IDErrInvalidChar, 1},
		{"a.b/c", IDErrInvalidChar, 3},
		{"\x00", IDErrInvalidChar, 0},
		{"a*", IDErrInvalidChar, 1},
		{"échо", IDErrNonASCII, 0},
		{"AB\xff", IDErrNonASCII, 2}, // folding must not move offsets
		{"-a", IDErrLeadingHyphen, 0},
		{"-", IDErrLeadingHyphen, 0},
		{"a.-b", IDErrLeadingHyphen, 2},
		{"a-", IDErrTrailingHyphen, 1},
		{"a.bc-.d", IDErrTrailingHyphen, 4},
		{"rk-", IDErrTrailingHyphen, 2},
		{"rk--", IDErrKeyLength, 0},
		{"rk--abc.demo", IDErrKeyLength, 0},
		{testKL + "a", IDErrKeyLength, 0},
		{testKL[:len(testKL)-1], IDErrKeyLength, 0},
		{"RK--" + strings.Repeat("A", 51), IDErrKeyLength, 0},
		{"rk--0" + testKL[5:] + ".demo", IDErrKeyEncoding, 4},
		{testKL[:len(testKL)-1] + "9", IDErrKeyEncoding, 55},
		{testKL[:10] + "-" + testKL[11:], IDErrKeyEncoding, 10},
		{keyLabelPrefix + nonCanonical(testFP), IDErrKeyNonCanonical, 55},
		{keyLabelPrefix + nonCanonical(testFP) + ".demo", IDErrKeyNonCanonical, 55},
		{"echo." + testKL, IDErrMisplacedKey, 5},
		{testKL + "." + testKL2, IDErrMisplacedKey, 57},
		{"a.rk--x", IDErrMisplacedKey, 2},
		{"a.rk--", IDErrMisplacedKey, 2},
		{zeroKL, IDErrKeyZero, 0},
		{strings.ToUpper(zeroKL) + ".echo.demo", IDErrKeyZero, 0},
	} {
		id, err := ParseServiceID(tc.in)
		name := tc.in
		if len(name) > 80 {
			name = name[:80]
		}
		require.Error(t, err, name)
		require.True(t, id.IsZero(), name)
		require.ErrorIs(t, err, ErrInvalidServiceID, name)
		var e *ServiceIDError
		require.ErrorAs(t, err, &e, name)
		require.Equal(t, tc.kind, e.Kind, "%s: %v", name, err)
		require.Equal(t, tc.pos, e.Pos, "%s: %v", name, err)
		if e.Pos >= 0 {
			require.Equal(t, tc.in, e.Input, "Pos must index the input as given")
		}
		require.LessOrEqual(t, len(err.Error()), 200, "error too long: %v", err)
	}
}

func TestServiceIDErrorMessage(t *testing.T) {
	for in, want := range map[string]string{
		"ec ho.demo": `sal: invalid service ID "ec ho.demo": invalid character ' ' at offset 2`,
		"a\x01":      `sal: invalid service ID "a\x01": invalid character '\x01' at offset 1`,
		"ab\xc3\xa9": `sal: invalid service ID "ab\u00e9": non-ASCII byte 0xc3 at offset 2`,
		"ab\xff":     `sal: invalid service ID "ab\xff": non-ASCII byte 0xff at offset 2`,
		"":           `sal: invalid service ID "": empty`,
		"a-.b":       `sal: invalid service ID "a-.b": label ends with a hyphen at offset 1`,
	} {
		_, err := ParseServiceID(in)
		require.EqualError(t, err, want)
	}

	// A megabyte from a peer must neither be printed nor kept alive.
	huge := strings.Repeat("x", 1<<20)
	_, err := ParseServiceID(huge)
	var e *ServiceIDError
	require.ErrorAs(t, err, &e)
	require.Equal(t, strings.Repeat("x", errEchoMax)+"...", e.Input)
	require.Equal(t, `sal: invalid service ID "`+strings.Repeat("x", errEchoMax)+`"...: longer than 253 bytes`, err.Error())

	for k := IDErrEmpty; k <= IDErrKeyZero; k++ {
		require.NotContains(t, k.String(), "IDErrorKind(", "kind %d has no name", k)
	}
	require.Equal(t, "IDErrorKind(0)", IDErrorKind(0).String())
}

func TestNewServiceID(t *testing.T) {
	id, err := NewServiceID("Echo.demo.", testFP)
	require.NoError(t, err)
	require.Equal(t, MustParseServiceID(testKL+".echo.demo"), id)

	id, err = NewServiceID("", testFP)
	require.NoError(t, err)
	require.Equal(t, testKL, id.String())

	id, err = NewServiceID("echo.demo", resolve.Fingerprint{})
	require.NoError(t, err)
	require.Equal(t, MustParseServiceID("echo.demo"), id)

	for _, tc := range []struct {
		name string
		key  resolve.Fingerprint
		kind IDErrorKind
		pos  int
	}{
		{"", resolve.Fingerprint{}, IDErrEmpty, -1},
		{testKL + ".echo", resolve.Fingerprint{}, IDErrMisplacedKey, 0}, // a name holds no key
		{testKL, testFP, IDErrMisplacedKey, 57},
		{"a_b", testFP, IDErrInvalidChar, 58}, // offsets are in "rk--<fp>.a_b"
		{idOfLen(253 - 56), testFP, IDErrTooLong, -1},
		{".", testFP, IDErrEmptyLabel, 57},
	} {
		_, err := NewServiceID(tc.name, tc.key)
		var e *ServiceIDError
		require.ErrorAs(t, err, &e, tc.name)
		require.Equal(t, tc.kind, e.Kind, "%q: %v", tc.name, err)
		require.Equal(t, tc.pos, e.Pos, "%q: %v", tc.name, err)
	}
}

func TestServiceIDMethods(t *testing.T) {
	var zero ServiceID
	require.True(t, zero.IsZero())
	require.Equal(t, "", zero.String())
	require.Equal(t, "", zero.LookupName())

	name := MustParseServiceID("echo.demo")
	keyed := name.WithKey(testFP)
	require.Equal(t, MustParseServiceID(testKL+".echo.demo"), keyed)
	require.Equal(t, name, keyed.WithKey(resolve.Fingerprint{}))
	require.Equal(t, "echo.demo", name.LookupName())
	require.Equal(t, "echo.demo", keyed.LookupName())
	require.Equal(t, testKL, MustParseServiceID(testKL).LookupName())
	require.Equal(t, zero, MustParseServiceID(testKL).WithKey(resolve.Fingerprint{}))

	// As map keys, equal IDs are equal whatever their spelling.
	m := map[ServiceID]int{MustParseServiceID("ECHO.demo."): 1}
	require.Equal(t, 1, m[name])

	type doc struct {
		A, B, C ServiceID
	}
	in := doc{A: keyed, B: name}
	b, err := json.Marshal(in)
	require.NoError(t, err)
	require.JSONEq(t, `{"A":"`+testKL+`.echo.demo","B":"echo.demo","C":""}`, string(b))
	var out doc
	require.NoError(t, json.Unmarshal(b, &out))
	require.Equal(t, in, out)
	err = json.Unmarshal([]byte(`{"A":"bad_id"}`), &out)
	require.ErrorIs(t, err, ErrInvalidServiceID)
}

// The hand-written base32 decoder must agree with resolve's, which is the
// definition of a fingerprint's text form.
func TestServiceIDKeyLabelMatchesResolve(t *testing.T) {
	for i := range 200 {
		fp := resolve.Fingerprint(sha256.Sum256([]byte{byte(i), byte(i >> 8)}))
		id, err := ParseServiceID(keyLabelPrefix + fp.String())
		require.NoError(t, err)
		got, _ := id.Key()
		require.Equal(t, fp, got)
		require.Equal(t, keyLabelPrefix+fp.String(), id.String())

		_, err = ParseServiceID(keyLabelPrefix + nonCanonical(fp))
		require.Error(t, err)
		_, err = resolve.ParseFingerprint(nonCanonical(fp))
		require.Error(t, err)
	}
}

func TestParseServiceIDAllocs(t *testing.T) {
	for _, in := range []string{"echo.demo", "a.b.echo.demo.", testKL, testKL + ".echo.demo"} {
		n := testing.AllocsPerRun(100, func() {
			if _, err := ParseServiceID(in); err != nil {
				panic(err)
			}
		})
		require.Zero(t, n, in)
	}
	id := MustParseServiceID(testKL + ".echo.demo")
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = id.String() }))
}

func BenchmarkParseServiceID(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"name", "api.echo.demo"},
		{"keyed", testKL + ".echo.demo"},
		{"upper", "API.Echo.Demo"},
		{"invalid", "api.ec ho.demo"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = ParseServiceID(bc.in)
			}
		})
	}
}

func FuzzParseServiceID(f *testing.F) {
	for _, s := range []string{
		"echo.demo", "Echo.Demo.", "a", "a.b.c.d.e", "xn--bcher-kva.example", "a--b",
		"", ".", "..", "a..b", ".a", "a..", "-a", "a-", "a.-b.c", "ec ho", "a_b", "a\x00",
		"\xff", "é.demo", "AB\xff",
		strings.Repeat("a", 63), strings.Repeat("a", 64), idOfLen(253), idOfLen(253) + ".",
		idOfLen(254), idOfLen(254) + ".",
		testKL, testKL + ".", testKL + ".echo.demo", strings.ToUpper(testKL) + ".ECHO",
		"rk--", "rk-", "rk--abc", testKL + "a", testKL[:55], "rk--0" + testKL[5:],
		keyLabelPrefix + nonCanonical(testFP), "echo." + testKL, testKL + "." + testKL2,
		testKL + "." + idOfLen(196), testKL + "." + idOfLen(197), zeroKL, zeroKL + ".echo.demo",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		id, err := ParseServiceID(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidServiceID) {
				t.Fatalf("%q: error %v does not wrap ErrInvalidServiceID", in, err)
			}
			var e *ServiceIDError
			if !errors.As(err, &e) {
				t.Fatalf("%q: error %v is not a *ServiceIDError", in, err)
			}
			if e.Pos >= len(in) || e.Pos < -1 || (e.Pos >= 0 && e.Input != in) {
				t.Fatalf("%q: bad Pos %d or Input %q", in, e.Pos, e.Input)
			}
			if e.Kind.String() == "" || strings.HasPrefix(e.Kind.String(), "IDErrorKind(") {
				t.Fatalf("%q: unnamed kind %d", in, e.Kind)
			}
			if !id.IsZero() {
				t.Fatalf("%q: non-zero ID with error", in)
			}
			return
		}
		s := id.String()
		// The canonical form is the input, folded, without its dot.
		if want := foldASCII(strings.TrimSuffix(in, ".")); s != want {
			t.Fatalf("%q: String() = %q, want %q", in, s, want)
		}
		if len(s) > maxIDLen || s != strings.ToLower(s) {
			t.Fatalf("%q: bad canonical form %q", in, s)
		}
		again, err := ParseServiceID(s)
		if err != nil || again != id {
			t.Fatalf("%q: round trip gave %v, %v", in, again, err)
		}
		key, ok := id.Key()
		if ok {
			fp, err := resolve.ParseFingerprint(s[len(keyLabelPrefix):keyLabelLen])
			if err != nil || fp != key {
				t.Fatalf("%q: key %v, resolve says %v, %v", in, key, fp, err)
			}
		}
		if rebuilt, err := NewServiceID(id.Name(), key); err != nil || rebuilt != id {
			t.Fatalf("%q: NewServiceID(Name, Key) = %v, %v", in, rebuilt, err)
		}
	})
}

// zeroKL is the key label of the zero fingerprint, which pins nothing.
var zeroKL = keyLabelPrefix + strings.Repeat("a", resolve.FingerprintLen)

// A key label of the all-zero fingerprint is refused wherever an ID is
// read (it used to parse as an unpinned name that looked pinned, and was
// dialed without any key check), and a dial of it fails before any
// lookup.
func TestZeroKeyLabelRefused(t *testing.T) {
	for _, in := range []string{zeroKL, zeroKL + ".echo.demo", strings.ToUpper(zeroKL) + ".Echo.Demo."} {
		_, err := ParseServiceID(in)
		var e *ServiceIDError
		require.ErrorAs(t, err, &e, in)
		require.Equal(t, IDErrKeyZero, e.Kind, "%s: %v", in, err)
		require.Contains(t, err.Error(), "all zero")

		var id ServiceID
		require.ErrorIs(t, id.UnmarshalText([]byte(in)), ErrInvalidServiceID)
		require.True(t, id.IsZero())

		r := new(countingResolver)
		h := newHost(t, Config{Resolver: r})
		_, err = h.Dial(testCtx(t), in)
		require.ErrorIs(t, err, ErrInvalidServiceID, in)
		require.ErrorAs(t, err, &e)
		require.Equal(t, IDErrKeyZero, e.Kind)
		require.Zero(t, r.n.Load(), "refused before any lookup")
	}
	// The zero fingerprint as a key is "no key" in the API, never in text.
	id, err := NewServiceID("echo.demo", resolve.Fingerprint{})
	require.NoError(t, err)
	_, pinned := id.Key()
	require.False(t, pinned)
	require.Equal(t, "echo.demo", id.String())
}

// countingResolver finds nothing, and counts the lookups.
type countingResolver struct{ n atomic.Int32 }

func (r *countingResolver) Resolve(ctx context.Context, service string) ([]resolve.Endpoint, error) {
	r.n.Add(1)
	return nil, resolve.ErrNotFound
}
