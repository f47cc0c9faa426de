package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOpenRoundTrip(t *testing.T) {
	ext, err := AppendTLV(nil, ExtPad, []byte("xyz"))
	require.NoError(t, err)
	for _, o := range []Open{
		{FlowID: 1, Service: "echo.demo"},
		{FlowID: 1<<64 - 1, Service: string(bytes.Repeat([]byte("a"), MaxService)), Ext: ext},
	} {
		b, err := AppendOpen(nil, o)
		require.NoError(t, err)
		// Trailing application bytes must stay unread.
		r := bytes.NewReader(append(b, "app data"...))
		got, err := ReadOpen(r)
		require.NoError(t, err)
		require.Equal(t, o, got)
		rest, _ := io.ReadAll(r)
		require.Equal(t, "app data", string(rest))
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for _, s := range []Status{StatusOK, StatusNoListener, StatusBusy, StatusRefused} {
		b, err := AppendReply(nil, Reply{Status: s})
		require.NoError(t, err)
		got, err := ReadReply(bytes.NewReader(b))
		require.NoError(t, err)
		require.Equal(t, s, got.Status)
		require.NotEmpty(t, s.String())
	}
}

func TestAppendRejects(t *testing.T) {
	_, err := AppendOpen(nil, Open{Service: ""})
	require.ErrorIs(t, err, ErrMalformed)
	_, err = AppendOpen(nil, Open{Service: string(make([]byte, MaxService+1))})
	require.ErrorIs(t, err, ErrMalformed)
	_, err = AppendOpen(nil, Open{Service: "a", Ext: make([]byte, MaxExt+1)})
	require.ErrorIs(t, err, ErrMalformed)
	_, err = AppendTLV(nil, 1, make([]byte, 256))
	require.ErrorIs(t, err, ErrMalformed)
}

func TestReadOpenErrors(t *testing.T) {
	valid, err := AppendOpen(nil, Open{FlowID: 7, Service: "a.b"})
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		in    []byte
		is    error
		field string
	}{
		{"empty", nil, io.EOF, ""},
		{"bad version", []byte("GET / HTTP/1.1\r\n"), ErrMalformed, "version"},
		{"bad type", []byte{Version, TypeReply, 0, 0, 0, 0, 0, 0, 0, 0, 1}, ErrMalformed, "type"},
		{"empty service", []byte{Version, TypeOpen, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrMalformed, "service"},
		{"truncated", valid[:len(valid)-1], io.ErrUnexpectedEOF, ""},
		{"truncated after version", valid[:1], io.ErrUnexpectedEOF, ""},
		{"ext too long", append(append([]byte{}, valid[:len(valid)-2]...), 0xff, 0xff), ErrMalformed, "ext"},
		{"bad TLV", append(append([]byte{}, valid[:len(valid)-2]...), 0, 3, 1, 9, 0), ErrMalformed, "ext"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadOpen(bytes.NewReader(tc.in))
			require.ErrorIs(t, err, tc.is)
			if tc.field != "" {
				var fe *FormatError
				require.True(t, errors.As(err, &fe))
				require.Equal(t, tc.field, fe.Field)
			}
		})
	}
}

func TestLookupTLV(t *testing.T) {
	ext, _ := AppendTLV(nil, 9, []byte("skip"))
	ext, _ = AppendTLV(ext, 2, []byte("want"))
	v, ok := LookupTLV(ext, 2)
	require.True(t, ok)
	require.Equal(t, "want", string(v))
	_, ok = LookupTLV(ext, 3)
	require.False(t, ok)
	_, ok = LookupTLV([]byte{1}, 1)
	require.False(t, ok)
}

func FuzzReadOpen(f *testing.F) {
	for _, o := range []Open{{FlowID: 1, Service: "echo.demo"}, {Service: "x", Ext: []byte{0, 1, 2}}} {
		b, _ := AppendOpen(nil, o)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{Version})
	f.Add([]byte("\x16\x03\x01garbage"))
	f.Add([]byte{Version, TypeOpen, 0, 0, 0, 0, 0, 0, 0, 0, 255})
	f.Fuzz(func(t *testing.T, in []byte) {
		o, err := ReadOpen(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Whatever decodes must re-encode to the bytes it came from.
		b, err := AppendOpen(nil, o)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", o, err)
		}
		if !bytes.Equal(b, in[:len(b)]) {
			t.Fatalf("round trip: got %x, want prefix of %x", b, in)
		}
	})
}

func FuzzReadReply(f *testing.F) {
	b, _ := AppendReply(nil, Reply{Status: StatusBusy, Ext: []byte{5, 0}})
	f.Add(b)
	f.Add([]byte{Version, TypeReply})
	f.Add([]byte("garbage!"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ReadReply(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		b, err := AppendReply(nil, r)
		if err != nil || !bytes.Equal(b, in[:len(b)]) {
			t.Fatalf("round trip of %x: %x, %v", in, b, err)
		}
	})
}
