package regwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func sampleFrames() []*Frame {
	ep4 := Endpoint{Addr: netip.MustParseAddrPort("192.0.2.1:4433"), TTL: 15 * time.Second}
	ep6 := Endpoint{Addr: netip.MustParseAddrPort("[2001:db8::1]:443"), Key: [32]byte{1, 2, 3}, TTL: time.Millisecond}
	return []*Frame{
		{Type: TypeLookup, ID: 1, Service: "echo.demo"},
		{Type: TypeRegister, ID: 2, Service: "echo.demo", Endpoint: ep6, PublicKey: []byte("pub"), Signature: []byte("sig")},
		{Type: TypeRenew, ID: 3, Lease: 0xdeadbeefcafe},
		{Type: TypeWithdraw, ID: 4, Lease: 7},
		{Type: TypeWatch, ID: 1 << 40, Service: "x"},
		{Type: TypeUnwatch, ID: 5},
		{Type: TypeEndpoints, ID: 6, Endpoints: []Endpoint{ep4, ep6}},
		{Type: TypeEndpoints, ID: 7},
		{Type: TypeLease, ID: 8, Lease: 9, TTL: 10 * time.Second},
		{Type: TypeOK, ID: 9},
		{Type: TypeError, ID: 10, Code: CodeNotOwner, Message: "bound to another key"},
		{Type: TypeError, ID: 11, Code: CodeAllDown, Message: "every endpoint is down"},
	}
}

func TestRoundTrip(t *testing.T) {
	var stream []byte
	for _, f := range sampleFrames() {
		stream = Append(stream, f)
	}
	r := bufio.NewReader(bytes.NewReader(stream))
	var buf []byte
	for _, want := range sampleFrames() {
		got, b, err := Read(r, buf)
		buf = b
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, _, err := Read(r, buf)
	require.ErrorIs(t, err, io.EOF)
}

func TestMalformed(t *testing.T) {
	frame := func(body ...byte) []byte { return append([]byte{byte(len(body))}, body...) }
	for name, in := range map[string][]byte{
		"zero length":      {0},
		"huge length":      {0xff, 0xff, 0xff, 0xff, 0x0f},
		"truncated":        {5, TypeLookup, 1},
		"unknown type":     frame(0x7f, 1),
		"empty service":    frame(TypeLookup, 1, 0),
		"long service":     frame(TypeLookup, 1, 0xff, 0x01),
		"trailing":         frame(TypeOK, 1, 0),
		"bad family":       frame(TypeEndpoints, 1, 1, 5),
		"bad key flag":     frame(TypeEndpoints, 1, 1, 4, 1, 2, 3, 4, 0, 1, 9),
		"zero key":         frame(append([]byte{TypeEndpoints, 1, 1, 4, 1, 2, 3, 4, 0, 1, 1}, make([]byte, 33)...)...),
		"too many":         frame(TypeEndpoints, 1, 0xff, 0x7f),
		"bad varint":       frame(TypeLookup, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
		"short lease":      frame(TypeRenew, 1, 0, 0),
		"overflowing ttl":  frame(TypeLease, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"oversized pubkey": frame(TypeRegister, 1, 1, 'a', 4, 1, 2, 3, 4, 0, 1, 0, 0, 0xff, 0x7f),
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Read(bufio.NewReader(bytes.NewReader(in)), nil)
			require.ErrorIs(t, err, ErrMalformed)
		})
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

// Read tells bytes that are not a frame (ErrMalformed) from a stream that
// ended between frames (io.EOF) and from a stream that failed under it (a
// reset, a closed connection: how a client that leaves ends its stream),
// whose error it returns as it is.
func TestReadErrors(t *testing.T) {
	gone := errors.New("connection closed by peer")
	lookup := Append(nil, &Frame{Type: TypeLookup, ID: 1, Service: "echo.demo"})
	for _, tt := range []struct {
		name    string
		in      io.Reader
		want    error
		garbage bool
	}{
		{"end between frames", bytes.NewReader(nil), io.EOF, false},
		{"end after a frame", bytes.NewReader(lookup), io.EOF, false},
		{"failure between frames", io.MultiReader(bytes.NewReader(lookup), failingReader{gone}), gone, false},
		{"failure inside the length", io.MultiReader(bytes.NewReader([]byte{0x80}), failingReader{gone}), gone, false},
		{"failure inside a frame", io.MultiReader(bytes.NewReader(lookup[:4]), failingReader{gone}), gone, false},
		{"end inside the length", bytes.NewReader([]byte{0x80}), ErrMalformed, true},
		{"end inside a frame", bytes.NewReader(lookup[:4]), ErrMalformed, true},
		{"overlong length", bytes.NewReader(bytes.Repeat([]byte{0xff}, 11)), ErrMalformed, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(tt.in)
			var err error
			for err == nil {
				_, _, err = Read(br, nil)
			}
			require.ErrorIs(t, err, tt.want)
			require.Equal(t, tt.garbage, errors.Is(err, ErrMalformed), "%v", err)
		})
	}
	require.Error(t, errVarintOverflow)
}

// FuzzDecode checks that no input panics the decoder, and that whatever it
// accepts re-encodes to a frame that decodes the same.
func FuzzDecode(f *testing.F) {
	for _, fr := range sampleFrames() {
		b := Append(nil, fr)
		f.Add(b)
	}
	f.Add([]byte{0})
	f.Add([]byte{3, TypeEndpoints, 1, 0x81})
	f.Add(append([]byte{44, TypeEndpoints, 1, 1, 4, 1, 2, 3, 4, 0, 1, 1}, make([]byte, 33)...)) // a zero key
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		var buf []byte
		for range 4 {
			fr, b, err := Read(r, buf)
			buf = b
			if err != nil {
				return
			}
			again, _, err := Read(bufio.NewReader(bytes.NewReader(Append(nil, fr))), nil)
			require.NoError(t, err)
			require.Equal(t, fr, again)
		}
	})
}
