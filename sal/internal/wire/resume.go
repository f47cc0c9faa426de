package wire

import (
	"encoding/binary"
	"io"
)

// A Resume moves an existing flow onto a new stream, usually of a new
// connection, after the old one failed or its Host moved:
//
//	Resume = version(1) type(1)=0x02 flowID(8) gen(8) tag(32) readOff(8) sendFrom(8) extLen(2) ext(extLen)
//
// The dialer sends the flow's secret once, inside TLS, in its Open
// (ExtSecret). A Resume proves knowledge of it without sending it again:
// tag = HMAC-SHA256(secret, flowID || gen), where gen counts the dialer's
// resume attempts. A listener accepts a gen no lower than any it accepted
// before, so a replayed Resume is refused, and nothing needs to be handed
// back to the dialer for the next resume to work, even if this one's Reply
// is lost.
//
// readOff is how many bytes of the flow the dialer has read; the listener
// replays its data from there. sendFrom is the offset of the first byte the
// dialer sends after the Resume on this stream (the highest offset the
// listener acknowledged), so its data follows at once, without waiting for
// the Reply, and the listener skips what it already has.
//
// The Reply to a Resume carries the listener's read offset (ExtReadOff).
const TypeResume = 0x02

// SecretLen is the length of a flow's resume secret and of a Resume's tag.
const SecretLen = 32

// Ext TLV types.
const (
	ExtSecret  = 0x01 // in an Open: the flow's resume secret, SecretLen bytes
	ExtReadOff = 0x02 // in a Reply to a Resume: the listener's read offset, 8 bytes
	// ExtLimit is in a Reply with StatusLimit: the limit's value, 4 bytes,
	// then its name (sal.Limit), at most 64 bytes.
	ExtLimit = 0x03
	// ExtStripes (stripe.go) asks for, or agrees to, a striped carrier.
)

// Resume asks to move a flow onto the stream it begins.
type Resume struct {
	FlowID   uint64
	Gen      uint64
	Tag      [SecretLen]byte
	ReadOff  uint64
	SendFrom uint64
	Ext      []byte
}

// AppendResume appends the encoding of r to b.
func AppendResume(b []byte, r Resume) ([]byte, error) {
	if len(r.Ext) > MaxExt {
		return b, malformed("ext", "length %d exceeds %d", len(r.Ext), MaxExt)
	}
	b = append(b, Version, TypeResume)
	b = binary.BigEndian.AppendUint64(b, r.FlowID)
	b = binary.BigEndian.AppendUint64(b, r.Gen)
	b = append(b, r.Tag[:]...)
	b = binary.BigEndian.AppendUint64(b, r.ReadOff)
	b = binary.BigEndian.AppendUint64(b, r.SendFrom)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Ext)))
	return append(b, r.Ext...), nil
}

// Request is what may begin a stream: an Open or a Resume of a flow, a
// Stripe that joins a flow's striped carrier, or a Ping. Exactly one field
// is set.
type Request struct {
	Open   *Open
	Resume *Resume
	Stripe *Stripe
	Ping   *Ping
}

// ReadRequest reads an Open, a Resume, a Stripe or a Ping from r,
// whichever the peer sent.
func ReadRequest(r io.Reader) (Request, error) {
	var start [2]byte
	if _, err := io.ReadFull(r, start[:1]); err != nil {
		return Request{}, err
	}
	if start[0] != Version {
		return Request{}, malformed("version", "got %d, want %d", start[0], Version)
	}
	if _, err := io.ReadFull(r, start[1:]); err != nil {
		return Request{}, truncated(err)
	}
	switch start[1] {
	case TypeOpen:
		o, err := readOpenBody(r)
		if err != nil {
			return Request{}, err
		}
		return Request{Open: &o}, nil
	case TypeResume:
		rs, err := readResumeBody(r)
		if err != nil {
			return Request{}, err
		}
		return Request{Resume: &rs}, nil
	case TypePing:
		p, err := readPingBody(r)
		if err != nil {
			return Request{}, err
		}
		return Request{Ping: &p}, nil
	case TypeStripe:
		st, err := readStripeBody(r)
		if err != nil {
			return Request{}, err
		}
		return Request{Stripe: &st}, nil
	}
	return Request{}, malformed("type", "got %#x, want %#x, %#x, %#x or %#x", start[1], TypeOpen, TypeResume, TypeStripe, TypePing)
}

func readResumeBody(r io.Reader) (Resume, error) {
	var fixed [8 + 8 + SecretLen + 8 + 8 + 2]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Resume{}, truncated(err)
	}
	rs := Resume{FlowID: binary.BigEndian.Uint64(fixed[0:8]), Gen: binary.BigEndian.Uint64(fixed[8:16])}
	copy(rs.Tag[:], fixed[16:16+SecretLen])
	rest := fixed[16+SecretLen:]
	rs.ReadOff = binary.BigEndian.Uint64(rest[0:8])
	rs.SendFrom = binary.BigEndian.Uint64(rest[8:16])
	ext, err := readExt(r, binary.BigEndian.Uint16(rest[16:18]))
	if err != nil {
		return Resume{}, err
	}
	rs.Ext = ext
	return rs, nil
}

// Control frames travel on a connection's control stream, a unidirectional
// stream each Host opens on a connection when it first has something to
// say. An Ack tells the peer how far this end has read a flow, so the peer
// can free what it keeps for replay:
//
//	Ack = type(1)=0x01 flowID(8) readOff(8)
//
// readOff counts the flow's end (FIN) as one byte past its data.
const (
	FrameAck = 0x01
	AckLen   = 17
)

// Ack is a control frame.
type Ack struct {
	FlowID  uint64
	ReadOff uint64
}

// Uint64TLV is the 8-byte big-endian value of an integer TLV.
func Uint64TLV(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// ParseUint64TLV decodes an integer TLV's value.
func ParseUint64TLV(v []byte) (uint64, bool) {
	if len(v) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(v), true
}

// AppendAck appends the encoding of a to b.
func AppendAck(b []byte, a Ack) []byte {
	b = append(b, FrameAck)
	b = binary.BigEndian.AppendUint64(b, a.FlowID)
	return binary.BigEndian.AppendUint64(b, a.ReadOff)
}

// ReadAck reads one control frame, which must be an Ack.
func ReadAck(r io.Reader) (Ack, error) {
	var b [AckLen]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return Ack{}, err
	}
	if b[0] != FrameAck {
		return Ack{}, malformed("frame", "unknown control frame %#x", b[0])
	}
	if _, err := io.ReadFull(r, b[1:]); err != nil {
		return Ack{}, truncated(err)
	}
	return Ack{FlowID: binary.BigEndian.Uint64(b[1:9]), ReadOff: binary.BigEndian.Uint64(b[9:17])}, nil
}
