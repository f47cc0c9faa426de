// Package wire encodes and decodes the SAL header: the few bytes that begin
// every flow's QUIC stream, before any application data.
//
// A dialer opens a stream and writes an Open; the listening Host answers with
// a Reply and only then do application bytes flow in either direction. Both
// messages are length-delimited and read with exact-size reads, so a decoder
// never consumes a byte of application data that follows the header.
//
//	Open  = version(1) type(1)=0x01 flowID(8) svcLen(1) service(svcLen) extLen(2) ext(extLen)
//	Reply = version(1) type(1)=0x81 status(1) extLen(2) ext(extLen)
//
// A Resume (resume.go) or a Ping (ping.go) may begin a stream instead of an
// Open; ReadRequest reads any of them.
//
// Integers are big-endian. ext is a sequence of TLVs, type(1) len(1) value(len),
// reserved for later versions (resume secrets, offsets); unknown types are
// skipped so that old Hosts interoperate with new ones.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the only header version this package speaks.
const Version = 1

// Message types.
const (
	TypeOpen  = 0x01
	TypeReply = 0x81
)

// Limits. MaxService matches the longest service ID; MaxExt bounds what a
// hostile peer can make us buffer before the flow is even accepted.
const (
	MaxService = 253
	MaxExt     = 1024
)

// Status is a listener's answer to an Open.
type Status uint8

// Statuses.
const (
	StatusOK          Status = 0 // the flow is accepted
	StatusNoListener  Status = 1 // nobody listens on the service at this Host
	StatusBusy        Status = 2 // the listener's accept queue is full
	StatusBadRequest  Status = 3 // the Open was malformed
	StatusRefused     Status = 4 // the Host refuses the flow (e.g. a key the Host does not hold)
	StatusUnavailable Status = 5 // the Host or listener is shutting down
	// StatusNoFlow answers a Resume for a flow the Host does not know
	// (closed, lost, or never existed), or whose secret is wrong.
	StatusNoFlow Status = 6
	// StatusLimit refuses a flow that would take its connection over one
	// of the Host's limits; ExtLimit says which.
	StatusLimit Status = 7
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNoListener:
		return "no listener"
	case StatusBusy:
		return "busy"
	case StatusBadRequest:
		return "bad request"
	case StatusRefused:
		return "refused"
	case StatusUnavailable:
		return "unavailable"
	case StatusNoFlow:
		return "no such flow"
	case StatusLimit:
		return "over a limit"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Errors returned by the decoders. Every decoding failure wraps ErrMalformed;
// a peer that closes mid-header gives io.ErrUnexpectedEOF (or io.EOF before
// the first byte), and I/O errors of the underlying reader pass through.
var (
	ErrMalformed = errors.New("malformed SAL header")
)

// FormatError describes what was wrong with a header.
type FormatError struct {
	Field string // which field was bad
	Msg   string
}

func (e *FormatError) Error() string { return "malformed SAL header: " + e.Field + ": " + e.Msg }
func (e *FormatError) Unwrap() error { return ErrMalformed }

func malformed(field, format string, args ...any) error {
	return &FormatError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Open is the first message on a flow's stream.
type Open struct {
	FlowID  uint64
	Service string // the service ID's canonical text; validated by the caller
	Ext     []byte
}

// Reply answers an Open.
type Reply struct {
	Status Status
	Ext    []byte
}

// AppendOpen appends the encoding of o to b.
func AppendOpen(b []byte, o Open) ([]byte, error) {
	if len(o.Service) == 0 || len(o.Service) > MaxService {
		return b, malformed("service", "length %d out of range 1..%d", len(o.Service), MaxService)
	}
	if len(o.Ext) > MaxExt {
		return b, malformed("ext", "length %d exceeds %d", len(o.Ext), MaxExt)
	}
	b = append(b, Version, TypeOpen)
	b = binary.BigEndian.AppendUint64(b, o.FlowID)
	b = append(b, byte(len(o.Service)))
	b = append(b, o.Service...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(o.Ext)))
	return append(b, o.Ext...), nil
}

// AppendReply appends the encoding of r to b.
func AppendReply(b []byte, r Reply) ([]byte, error) {
	if len(r.Ext) > MaxExt {
		return b, malformed("ext", "length %d exceeds %d", len(r.Ext), MaxExt)
	}
	b = append(b, Version, TypeReply, byte(r.Status))
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Ext)))
	return append(b, r.Ext...), nil
}

// ReadOpen reads exactly one Open from r.
func ReadOpen(r io.Reader) (Open, error) {
	var start [2]byte
	if err := readHeaderStart(r, start[:], TypeOpen); err != nil {
		return Open{}, err
	}
	return readOpenBody(r)
}

// readOpenBody reads an Open after its version and type bytes.
func readOpenBody(r io.Reader) (Open, error) {
	var fixed [9]byte // flow ID, service length
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Open{}, truncated(err)
	}
	o := Open{FlowID: binary.BigEndian.Uint64(fixed[0:8])}
	n := int(fixed[8])
	if n == 0 {
		return Open{}, malformed("service", "empty")
	}
	svc := make([]byte, n+2) // service and the ext length after it
	if _, err := io.ReadFull(r, svc); err != nil {
		return Open{}, truncated(err)
	}
	o.Service = string(svc[:n])
	ext, err := readExt(r, binary.BigEndian.Uint16(svc[n:]))
	if err != nil {
		return Open{}, err
	}
	o.Ext = ext
	return o, nil
}

// ReadReply reads exactly one Reply from r.
func ReadReply(r io.Reader) (Reply, error) {
	var fixed [5]byte // version, type, status, ext length
	if err := readHeaderStart(r, fixed[:], TypeReply); err != nil {
		return Reply{}, err
	}
	ext, err := readExt(r, binary.BigEndian.Uint16(fixed[3:5]))
	if err != nil {
		return Reply{}, err
	}
	return Reply{Status: Status(fixed[2]), Ext: ext}, nil
}

// readHeaderStart fills buf and checks the version and type bytes. The
// version is checked after the first byte alone so that a peer speaking
// something else entirely is told apart from one that stalls.
func readHeaderStart(r io.Reader, buf []byte, typ byte) error {
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		return err // io.EOF here means the peer sent nothing at all
	}
	if buf[0] != Version {
		return malformed("version", "got %d, want %d", buf[0], Version)
	}
	if _, err := io.ReadFull(r, buf[1:]); err != nil {
		return truncated(err)
	}
	if buf[1] != typ {
		return malformed("type", "got %#x, want %#x", buf[1], typ)
	}
	return nil
}

func readExt(r io.Reader, n uint16) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	if n > MaxExt {
		return nil, malformed("ext", "length %d exceeds %d", n, MaxExt)
	}
	ext := make([]byte, n)
	if _, err := io.ReadFull(r, ext); err != nil {
		return nil, truncated(err)
	}
	if err := walkExt(ext, nil); err != nil {
		return nil, err
	}
	return ext, nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Ext TLV types.
const (
	// ExtPad is ignored; it exists so tests and future versions can
	// exercise the skip-unknown rule.
	ExtPad = 0x00
)

// AppendTLV appends one extension TLV to ext.
func AppendTLV(ext []byte, typ byte, value []byte) ([]byte, error) {
	if len(value) > 255 {
		return ext, malformed("ext", "TLV %#x value of %d bytes exceeds 255", typ, len(value))
	}
	return append(append(ext, typ, byte(len(value))), value...), nil
}

// LookupTLV returns the value of the first TLV of type typ in ext.
func LookupTLV(ext []byte, typ byte) (value []byte, ok bool) {
	_ = walkExt(ext, func(t byte, v []byte) bool {
		if t == typ {
			value, ok = v, true
			return false
		}
		return true
	})
	return value, ok
}

// walkExt checks that ext is a well-formed TLV sequence, calling fn for
// each TLV until fn returns false.
func walkExt(ext []byte, fn func(typ byte, value []byte) bool) error {
	for len(ext) > 0 {
		if len(ext) < 2 {
			return malformed("ext", "truncated TLV")
		}
		n := int(ext[1])
		if len(ext) < 2+n {
			return malformed("ext", "TLV %#x claims %d bytes, %d left", ext[0], n, len(ext)-2)
		}
		if fn != nil && !fn(ext[0], ext[2:2+n]) {
			return nil
		}
		ext = ext[2+n:]
	}
	return nil
}
