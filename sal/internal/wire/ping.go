package wire

import (
	"encoding/binary"
	"io"
)

// A Ping asks a Host whether it serves a service, without opening a flow:
//
//	Ping = version(1) type(1)=0x03 svcLen(1) service(svcLen) extLen(2) ext(extLen)
//
// It begins a stream of its own, like an Open, and the listening Host
// answers with a Reply (StatusOK when it listens on the service,
// StatusNoListener otherwise) and ends the stream. Health checkers send it
// on the connection that flows use, so a ping that succeeds says the path,
// the peer's key and its listener are all there.
const TypePing = 0x03

// Ping asks whether Service is served.
type Ping struct {
	Service string // the service ID's canonical text; validated by the caller
	Ext     []byte
}

// AppendPing appends the encoding of p to b.
func AppendPing(b []byte, p Ping) ([]byte, error) {
	if len(p.Service) == 0 || len(p.Service) > MaxService {
		return b, malformed("service", "length %d out of range 1..%d", len(p.Service), MaxService)
	}
	if len(p.Ext) > MaxExt {
		return b, malformed("ext", "length %d exceeds %d", len(p.Ext), MaxExt)
	}
	b = append(b, Version, TypePing, byte(len(p.Service)))
	b = append(b, p.Service...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.Ext)))
	return append(b, p.Ext...), nil
}

// readPingBody reads a Ping after its version and type bytes.
func readPingBody(r io.Reader) (Ping, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return Ping{}, truncated(err)
	}
	if n[0] == 0 {
		return Ping{}, malformed("service", "empty")
	}
	svc := make([]byte, int(n[0])+2) // service and the ext length after it
	if _, err := io.ReadFull(r, svc); err != nil {
		return Ping{}, truncated(err)
	}
	ext, err := readExt(r, binary.BigEndian.Uint16(svc[n[0]:]))
	if err != nil {
		return Ping{}, err
	}
	return Ping{Service: string(svc[:n[0]]), Ext: ext}, nil
}
