package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStripeRoundTrip(t *testing.T) {
	st := Stripe{FlowID: 9, Carrier: 4}
	st.Tag[0], st.Tag[31] = 5, 6
	req, err := ReadRequest(bytes.NewReader(append(AppendStripe(nil, st), "chunks"...)))
	require.NoError(t, err)
	require.Equal(t, st, *req.Stripe)
	_, err = ReadRequest(bytes.NewReader(AppendStripe(nil, st)[:20]))
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)

	w, ok := ParseStripesTLV(StripesTLV(8 << 20))
	require.True(t, ok)
	require.EqualValues(t, 8<<20, w)
	_, ok = ParseStripesTLV(StripesTLV(100)) // smaller than one chunk: useless
	require.False(t, ok)
	_, ok = ParseStripesTLV([]byte{1, 2})
	require.False(t, ok)
}

func TestChunkHeaders(t *testing.T) {
	var b []byte
	b = AppendChunkHeader(b, 0, 3)
	b = append(b, "abc"...)
	b = AppendChunkHeader(b, 1<<40, MaxChunk)
	b = AppendChunkHeader(b, 77, 0)
	r := bytes.NewReader(b)
	var hdr [ChunkHeaderLen]byte
	off, n, err := ReadChunkHeader(r, &hdr)
	require.NoError(t, err)
	require.Equal(t, [2]uint64{0, 3}, [2]uint64{off, uint64(n)})
	r.Seek(3, io.SeekCurrent)
	off, n, err = ReadChunkHeader(r, &hdr)
	require.NoError(t, err)
	require.Equal(t, [2]uint64{1 << 40, MaxChunk}, [2]uint64{off, uint64(n)})
	off, n, err = ReadChunkHeader(r, &hdr)
	require.NoError(t, err)
	require.Equal(t, [2]uint64{77, 0}, [2]uint64{off, uint64(n)})
	_, _, err = ReadChunkHeader(r, &hdr)
	require.ErrorIs(t, err, io.EOF)
	_, _, err = ReadChunkHeader(bytes.NewReader(b[:4]), &hdr)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, _, err = ReadChunkHeader(bytes.NewReader(AppendChunkHeader(nil, 1<<63, 1)), &hdr)
	require.ErrorIs(t, err, ErrMalformed)
}

func FuzzReadChunkHeader(f *testing.F) {
	f.Add(AppendChunkHeader(nil, 5, 6))
	f.Add(AppendChunkHeader(nil, 5, 0))
	f.Add(AppendChunkHeader(nil, 1<<62+1, 1))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		var hdr [ChunkHeaderLen]byte
		off, n, err := ReadChunkHeader(bytes.NewReader(in), &hdr)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if n < 0 || n > MaxChunk || off > 1<<62 {
			t.Fatalf("%x: off %d n %d out of range", in, off, n)
		}
		if out := AppendChunkHeader(nil, off, n); !bytes.HasPrefix(in, out) {
			t.Fatalf("round trip of %x: %x", in, out)
		}
	})
}
