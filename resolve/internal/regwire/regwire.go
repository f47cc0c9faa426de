// Package regwire encodes and decodes the messages of roam's registry
// protocol. Both ends speak it over one bidirectional QUIC stream per client
// connection: requests carry an ID that the answers repeat, so a client can
// keep many requests in flight, and a watch's pushed updates carry the ID of
// the Watch request that asked for them.
//
//	frame    = length(uvarint) type(1) id(uvarint) body      length counts type..body
//	Lookup   = service                                        -> Endpoints | Error
//	Register = service endpoint pubkey(bytes) sig(bytes)      -> Lease | Error
//	Renew    = lease(8)                                       -> Lease | Error
//	Withdraw = lease(8)                                       -> OK | Error
//	Watch    = service                                        -> Endpoints... (pushed) | Error
//	Unwatch  = (the watch's id)                               -> OK
//	Endpoints = count(uvarint) endpoint*
//	Lease    = lease(8) ttl-ms(uvarint)
//	Error    = code(1) message
//	endpoint = family(1: 4 or 6) addr(4|16) port(2) haskey(1) [key(32), not all zero] ttl-ms(uvarint)
//	service, message, bytes = len(uvarint) data
//
// Decoders check every length against the limits below before allocating,
// so a hostile peer cannot make either end buffer more than MaxFrame.
package regwire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Message types. Requests have the high bit clear; answers have it set.
const (
	TypeLookup    = 0x01
	TypeRegister  = 0x02
	TypeRenew     = 0x03
	TypeWithdraw  = 0x04
	TypeWatch     = 0x05
	TypeUnwatch   = 0x06
	TypeEndpoints = 0x81
	TypeLease     = 0x82
	TypeOK        = 0x83
	TypeError     = 0x84
)

// Limits.
const (
	MaxFrame     = 64 << 10
	MaxService   = 253
	MaxEndpoints = 256
	MaxKey       = 2048 // a DER public key; RSA-8192 fits
	MaxSig       = 1024
	MaxMessage   = 512
)

// Code says why a request failed.
type Code uint8

// Codes.
const (
	CodeNotFound        Code = 1
	CodeInvalid         Code = 2
	CodeUnauthenticated Code = 3
	CodeNotOwner        Code = 4
	// CodeLimit: the request would go over one of the registry's limits.
	// The message names it as "limit <max> <name>", say "limit 256 leases
	// per key"; a client reads it back into a resolve.LimitError, and an
	// older client shows it as it is.
	CodeLimit        Code = 5
	CodeUnknownLease Code = 6 // expired, withdrawn, or from before a restart
	CodeInternal     Code = 7
	// CodeAllDown: the service has endpoints, but all failed their health
	// probes. A client that predates it reads an unknown code, which
	// registry.Client before this code mapped to resolve.ErrUnavailable.
	CodeAllDown Code = 8
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("regwire: malformed message")

// Endpoint is an endpoint as carried on the wire.
type Endpoint struct {
	Addr netip.AddrPort
	Key  [32]byte // zero: no key
	TTL  time.Duration
}

// Frame is one decoded message. Which fields are set depends on Type.
type Frame struct {
	Type      byte
	ID        uint64
	Service   string        // Lookup, Register, Watch
	Endpoint  Endpoint      // Register
	PublicKey []byte        // Register
	Signature []byte        // Register
	Lease     uint64        // Renew, Withdraw, Lease
	TTL       time.Duration // Lease
	Endpoints []Endpoint    // Endpoints
	Code      Code          // Error
	Message   string        // Error
}

// Append appends f's encoding to b.
func Append(b []byte, f *Frame) []byte {
	var body []byte
	body = append(body, f.Type)
	body = binary.AppendUvarint(body, f.ID)
	switch f.Type {
	case TypeLookup, TypeWatch:
		body = appendString(body, f.Service)
	case TypeRegister:
		body = appendString(body, f.Service)
		body = appendEndpoint(body, f.Endpoint)
		body = appendString(body, string(f.PublicKey))
		body = appendString(body, string(f.Signature))
	case TypeRenew, TypeWithdraw:
		body = binary.BigEndian.AppendUint64(body, f.Lease)
	case TypeEndpoints:
		body = binary.AppendUvarint(body, uint64(len(f.Endpoints)))
		for _, ep := range f.Endpoints {
			body = appendEndpoint(body, ep)
		}
	case TypeLease:
		body = binary.BigEndian.AppendUint64(body, f.Lease)
		body = binary.AppendUvarint(body, uint64(f.TTL/time.Millisecond))
	case TypeError:
		body = append(body, byte(f.Code))
		body = appendString(body, f.Message)
	}
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendEndpoint(b []byte, ep Endpoint) []byte {
	a := ep.Addr.Addr()
	if a.Is4() || a.Is4In6() {
		b = append(b, 4)
		v := a.Unmap().As4()
		b = append(b, v[:]...)
	} else {
		b = append(b, 6)
		v := a.As16()
		b = append(b, v[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, ep.Addr.Port())
	if ep.Key == ([32]byte{}) {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = append(b, ep.Key[:]...)
	}
	return binary.AppendUvarint(b, uint64(ep.TTL/time.Millisecond))
}

// errVarintOverflow is the error binary.ReadUvarint gives for a varint
// longer than 64 bits: the one error of its own, beside io.EOF,
// io.ErrUnexpectedEOF and the reader's errors.
var _, errVarintOverflow = binary.ReadUvarint(bytes.NewReader(bytes.Repeat([]byte{0xff}, binary.MaxVarintLen64+1)))

// Read reads one frame. buf is scratch space that Read may grow and return
// for reuse; the Frame does not alias it.
//
// Bytes that are not a frame, including a frame cut short by the end of
// the stream, give an error that wraps ErrMalformed. The end of the
// stream between frames gives io.EOF, and an error of the reader itself
// (a reset stream, a closed connection: how a peer that goes away ends
// its stream) is returned as it is, since the peer sent nothing wrong.
func Read(r *bufio.Reader, buf []byte) (*Frame, []byte, error) {
	n, err := binary.ReadUvarint(r)
	switch {
	case err == nil:
	case err == io.EOF && r.Buffered() == 0:
		return nil, buf, io.EOF
	case err == io.EOF, err == io.ErrUnexpectedEOF, err == errVarintOverflow:
		return nil, buf, malformed("length: %v", err)
	default:
		return nil, buf, err
	}
	if n == 0 || n > MaxFrame {
		return nil, buf, malformed("length %d out of range", n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, buf, malformed("frame of %d bytes: %v", n, err)
		}
		return nil, buf, err
	}
	f, err := Decode(buf)
	return f, buf, err
}

// Decode decodes one frame's body (type..end, without the length).
func Decode(b []byte) (*Frame, error) {
	d := decoder{b: b}
	f := &Frame{Type: d.byte("type")}
	f.ID = d.uvarint("id")
	switch f.Type {
	case TypeLookup, TypeWatch:
		f.Service = d.service()
	case TypeRegister:
		f.Service = d.service()
		f.Endpoint = d.endpoint()
		f.PublicKey = []byte(d.string("public key", MaxKey))
		f.Signature = []byte(d.string("signature", MaxSig))
	case TypeRenew, TypeWithdraw:
		f.Lease = d.uint64("lease")
	case TypeUnwatch, TypeOK:
	case TypeEndpoints:
		n := d.uvarint("count")
		if n > MaxEndpoints {
			d.fail("%d endpoints, at most %d", n, MaxEndpoints)
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			f.Endpoints = append(f.Endpoints, d.endpoint())
		}
	case TypeLease:
		f.Lease = d.uint64("lease")
		f.TTL = d.millis("ttl")
	case TypeError:
		f.Code = Code(d.byte("code"))
		f.Message = d.string("message", MaxMessage)
	default:
		d.fail("unknown type %#x", f.Type)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return f, nil
}

type decoder struct {
	b   []byte
	err error
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = malformed(format, args...)
	}
}

func (d *decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("%s: short", what)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte(what string) byte {
	if v := d.take(1, what); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) uint64(what string) uint64 {
	if v := d.take(8, what); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("%s: bad varint", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// millis decodes a duration in milliseconds, refusing any that overflows.
func (d *decoder) millis(what string) time.Duration {
	v := d.uvarint(what)
	if v > uint64(1<<62)/uint64(time.Millisecond) {
		d.fail("%s: %d ms out of range", what, v)
		return 0
	}
	return time.Duration(v) * time.Millisecond
}

func (d *decoder) string(what string, max int) string {
	n := d.uvarint(what)
	if n > uint64(max) {
		d.fail("%s: %d bytes, at most %d", what, n, max)
		return ""
	}
	return string(d.take(int(n), what))
}

func (d *decoder) service() string {
	s := d.string("service", MaxService)
	if d.err == nil && s == "" {
		d.fail("empty service")
	}
	return s
}

func (d *decoder) endpoint() Endpoint {
	var ep Endpoint
	var addr netip.Addr
	switch fam := d.byte("family"); fam {
	case 4:
		if v := d.take(4, "IPv4 address"); v != nil {
			addr = netip.AddrFrom4([4]byte(v))
		}
	case 6:
		if v := d.take(16, "IPv6 address"); v != nil {
			addr = netip.AddrFrom16([16]byte(v))
		}
	default:
		d.fail("address family %d", fam)
	}
	var port uint16
	if v := d.take(2, "port"); v != nil {
		port = binary.BigEndian.Uint16(v)
	}
	ep.Addr = netip.AddrPortFrom(addr, port)
	switch has := d.byte("key flag"); has {
	case 0:
	case 1:
		if v := d.take(32, "key"); v != nil {
			ep.Key = [32]byte(v)
			if ep.Key == ([32]byte{}) {
				// A key that is sent is a pin; zero would read as none.
				d.fail("all-zero key")
			}
		}
	default:
		d.fail("key flag %d", has)
	}
	ep.TTL = d.millis("endpoint ttl")
	return ep
}

// Writer writes frames to one stream for many goroutines. Frames from
// writers that arrive while another holds the stream are batched: the last
// writer in line flushes for all, so a burst of concurrent requests (or
// pushed watch updates) leaves in as few packets as it fits in.
type Writer struct {
	waiting atomic.Int32
	mu      sync.Mutex
	bw      *bufio.Writer
	buf     []byte
	err     error         // sticky: once a write fails, every later one fails too
	flush   chan struct{} // with a flusher (RunFlusher): asks it to flush
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, 16<<10)}
}

// Send writes f, and flushes unless another Send is waiting to follow it
// (or, with a flusher running, asks the flusher to).
func (w *Writer) Send(f *Frame) error {
	w.waiting.Add(1)
	w.mu.Lock()
	w.waiting.Add(-1)
	defer w.mu.Unlock()
	w.write(f)
	if w.waiting.Load() == 0 && w.err == nil {
		if w.flush != nil {
			select {
			case w.flush <- struct{}{}:
			default: // a flush is already due, and will carry f too
			}
		} else {
			w.err = w.bw.Flush()
		}
	}
	return w.err
}

// RunFlusher flushes for Send from now on, until done is closed, and
// returns the error that stopped it. Many goroutines that Send at once,
// each woken by its own answer, rarely overlap enough for Send's own
// batching; a flusher that runs when the scheduler gets to it finds the
// frames of all of them in the buffer, and sends them in one packet where
// they fit. It costs one goroutine wake-up per flush. Call it before the
// first Send.
func (w *Writer) RunFlusher(done <-chan struct{}) error {
	w.mu.Lock()
	w.flush = make(chan struct{}, 1)
	w.mu.Unlock()
	for {
		select {
		case <-done:
			return nil
		case <-w.flush:
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// Queue writes f without flushing: the caller knows more will follow, and
// must call Flush (or Send) after the last.
func (w *Writer) Queue(f *Frame) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.write(f)
	return w.err
}

// Flush flushes what Queue left buffered.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	return w.err
}

func (w *Writer) write(f *Frame) {
	if w.err != nil {
		return
	}
	w.buf = Append(w.buf[:0], f)
	_, w.err = w.bw.Write(w.buf)
}
