package wire

import (
	"encoding/binary"
	"io"
)

// A striped carrier spreads one flow's bytes over a stream on each of the
// dialer's paths, so that a flow has the bandwidth of all of them. The
// dialer asks for it with ExtStripes in the Open or Resume that begins the
// carrier's first stream, and the listener agrees with ExtStripes in its
// Reply; each carries the sender's receive window (below). From then on,
// after the headers, every byte on the carrier's streams is framed:
//
//	Chunk = off(8) len(2) data(len)     len 1..MaxChunk
//	End   = off(8) len(2)=0             the data ends at off
//
// off counts from the first byte the carrier carries in that direction
// (what the Resume's sendFrom, or the Reply's read offset, names in flow
// offsets). Every byte goes out once, on one stream; the receiver puts
// the chunks in order by off. End goes once, on the first stream, when
// the writer is done.
//
// A further stream joins the carrier with a Stripe:
//
//	Stripe = version(1) type(1)=0x04 flowID(8) carrier(8) tag(32)
//
// carrier names the carrier's first stream: 0 for the Open's, gen+1 for
// a Resume's of generation gen. tag = HMAC-SHA256(secret, "stripe" ||
// flowID || carrier), which only the flow's two ends can make. The
// listener answers with a Reply (StatusOK, or StatusNoFlow for a flow or
// carrier it does not hold) before either end sends a Chunk on it.
//
// The receive window, a 4-byte ExtStripes value, bounds how far past what
// the receiver has read a Chunk may reach: the sender keeps within it,
// using the flow's acknowledgements, so the receiver's reordering buffer
// never holds more.
const (
	TypeStripe = 0x04
	ExtStripes = 0x04
	// MaxChunk bounds a Chunk's data.
	MaxChunk = 1<<16 - 1
	// ChunkHeaderLen is the length of a Chunk's or an End's header.
	ChunkHeaderLen = 10
)

// Stripe joins the stream it begins to a striped carrier.
type Stripe struct {
	FlowID  uint64
	Carrier uint64
	Tag     [SecretLen]byte
}

// AppendStripe appends the encoding of s to b.
func AppendStripe(b []byte, s Stripe) []byte {
	b = append(b, Version, TypeStripe)
	b = binary.BigEndian.AppendUint64(b, s.FlowID)
	b = binary.BigEndian.AppendUint64(b, s.Carrier)
	return append(b, s.Tag[:]...)
}

func readStripeBody(r io.Reader) (Stripe, error) {
	var fixed [8 + 8 + SecretLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Stripe{}, truncated(err)
	}
	s := Stripe{FlowID: binary.BigEndian.Uint64(fixed[0:8]), Carrier: binary.BigEndian.Uint64(fixed[8:16])}
	copy(s.Tag[:], fixed[16:])
	return s, nil
}

// StripesTLV is the value of ExtStripes: the sender's receive window.
func StripesTLV(window uint32) []byte { return binary.BigEndian.AppendUint32(nil, window) }

// ParseStripesTLV decodes ExtStripes' value.
func ParseStripesTLV(v []byte) (window uint32, ok bool) {
	if len(v) != 4 {
		return 0, false
	}
	w := binary.BigEndian.Uint32(v)
	return w, w >= MaxChunk
}

// AppendChunkHeader appends the header of a Chunk of n bytes at off, or of
// an End at off when n is 0.
func AppendChunkHeader(b []byte, off uint64, n int) []byte {
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint16(b, uint16(n))
}

// ReadChunkHeader reads a Chunk's or an End's header: n is 0 for an End.
// A stream that ends cleanly between frames gives io.EOF; one that ends
// inside a header, io.ErrUnexpectedEOF.
func ReadChunkHeader(r io.Reader, buf *[ChunkHeaderLen]byte) (off uint64, n int, err error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return 0, 0, err
	}
	off = binary.BigEndian.Uint64(buf[:8])
	n = int(binary.BigEndian.Uint16(buf[8:]))
	if off > 1<<62 {
		return 0, 0, malformed("chunk", "offset %d out of range", off)
	}
	return off, n, nil
}
