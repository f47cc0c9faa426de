package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPingRoundTrip(t *testing.T) {
	ext, err := AppendTLV(nil, ExtPad, []byte("pad"))
	require.NoError(t, err)
	for _, p := range []Ping{
		{Service: "echo.demo"},
		{Service: strings.Repeat("a", MaxService), Ext: ext},
	} {
		b, err := AppendPing(nil, p)
		require.NoError(t, err)
		r := bytes.NewReader(append(b, "trailing"...))
		req, err := ReadRequest(r)
		require.NoError(t, err)
		require.Nil(t, req.Open)
		require.Nil(t, req.Resume)
		require.Equal(t, p, *req.Ping)
		rest, _ := io.ReadAll(r)
		require.Equal(t, "trailing", string(rest), "a Ping must not consume what follows it")
	}
}

func TestPingErrors(t *testing.T) {
	_, err := AppendPing(nil, Ping{})
	require.ErrorIs(t, err, ErrMalformed)
	_, err = AppendPing(nil, Ping{Service: strings.Repeat("a", MaxService+1)})
	require.ErrorIs(t, err, ErrMalformed)
	_, err = AppendPing(nil, Ping{Service: "a", Ext: make([]byte, MaxExt+1)})
	require.ErrorIs(t, err, ErrMalformed)

	valid, err := AppendPing(nil, Ping{Service: "a.b"})
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		in    []byte
		is    error
		field string
	}{
		{"empty service", []byte{Version, TypePing, 0, 0, 0}, ErrMalformed, "service"},
		{"no length", []byte{Version, TypePing}, io.ErrUnexpectedEOF, ""},
		{"short service", []byte{Version, TypePing, 9, 'a'}, io.ErrUnexpectedEOF, ""},
		{"truncated", valid[:len(valid)-1], io.ErrUnexpectedEOF, ""},
		{"ext too long", append(append([]byte{}, valid[:len(valid)-2]...), 0xff, 0xff), ErrMalformed, "ext"},
		{"bad TLV", append(append([]byte{}, valid[:len(valid)-2]...), 0, 1, 7), ErrMalformed, "ext"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadRequest(bytes.NewReader(tc.in))
			require.ErrorIs(t, err, tc.is)
			if tc.field != "" {
				var fe *FormatError
				require.True(t, errors.As(err, &fe))
				require.Equal(t, tc.field, fe.Field)
			}
		})
	}
}
