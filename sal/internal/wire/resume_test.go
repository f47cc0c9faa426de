package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRequestRoundTrip(t *testing.T) {
	rs := Resume{FlowID: 42, Gen: 3, ReadOff: 1 << 40, SendFrom: 7}
	rs.Tag[0], rs.Tag[31] = 1, 2
	b, err := AppendResume(nil, rs)
	require.NoError(t, err)
	req, err := ReadRequest(bytes.NewReader(append(b, "data"...)))
	require.NoError(t, err)
	require.Nil(t, req.Open)
	require.Equal(t, rs, *req.Resume)

	b, err = AppendOpen(nil, Open{FlowID: 9, Service: "a.b"})
	require.NoError(t, err)
	req, err = ReadRequest(bytes.NewReader(b))
	require.NoError(t, err)
	require.Nil(t, req.Resume)
	require.Equal(t, "a.b", req.Open.Service)

	_, err = ReadRequest(bytes.NewReader([]byte{Version, TypeReply}))
	require.ErrorIs(t, err, ErrMalformed)
	_, err = ReadRequest(bytes.NewReader(b[:5]))
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestAckRoundTrip(t *testing.T) {
	var b []byte
	b = AppendAck(b, Ack{FlowID: 1, ReadOff: 2})
	b = AppendAck(b, Ack{FlowID: 3, ReadOff: 1<<64 - 1})
	r := bytes.NewReader(b)
	a, err := ReadAck(r)
	require.NoError(t, err)
	require.Equal(t, Ack{1, 2}, a)
	a, err = ReadAck(r)
	require.NoError(t, err)
	require.Equal(t, Ack{3, 1<<64 - 1}, a)
	_, err = ReadAck(r)
	require.ErrorIs(t, err, io.EOF)
	_, err = ReadAck(bytes.NewReader([]byte{9}))
	require.ErrorIs(t, err, ErrMalformed)
	_, err = ReadAck(bytes.NewReader([]byte{FrameAck, 1}))
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func FuzzReadRequest(f *testing.F) {
	b, _ := AppendResume(nil, Resume{FlowID: 1, ReadOff: 2, SendFrom: 3, Ext: []byte{0, 0}})
	f.Add(b)
	b, _ = AppendOpen(nil, Open{FlowID: 1, Service: "x.y"})
	f.Add(b)
	b, _ = AppendPing(nil, Ping{Service: "x.y", Ext: []byte{0, 1, 7}})
	f.Add(b)
	f.Add([]byte{Version, TypeResume})
	f.Add(AppendStripe(nil, Stripe{FlowID: 7, Carrier: 2, Tag: [SecretLen]byte{1}}))
	f.Add([]byte{Version, TypeStripe, 1, 2})
	f.Add([]byte{Version, TypePing})
	f.Add([]byte{Version, TypePing, 0})
	f.Add([]byte{Version, TypePing, 200, 'a'})
	f.Add([]byte{Version, 0x77})
	f.Fuzz(func(t *testing.T, in []byte) {
		req, err := ReadRequest(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		var out []byte
		switch {
		case req.Open != nil:
			out, err = AppendOpen(nil, *req.Open)
		case req.Resume != nil:
			out, err = AppendResume(nil, *req.Resume)
		case req.Ping != nil:
			out, err = AppendPing(nil, *req.Ping)
		case req.Stripe != nil:
			out = AppendStripe(nil, *req.Stripe)
		default:
			t.Fatalf("%x decoded to an empty request", in)
		}
		if err != nil || !bytes.HasPrefix(in, out) {
			t.Fatalf("round trip of %x: %x, %v", in, out, err)
		}
	})
}

func FuzzReadAck(f *testing.F) {
	f.Add(AppendAck(nil, Ack{FlowID: 5, ReadOff: 6}))
	f.Add([]byte{FrameAck})
	f.Add([]byte{0xff, 1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		a, err := ReadAck(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if out := AppendAck(nil, a); !bytes.HasPrefix(in, out) {
			t.Fatalf("round trip of %x: %x", in, out)
		}
	})
}
