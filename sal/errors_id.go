package sal

import (
	"fmt"
	"strconv"
	"strings"
)

// IDErrorKind says what is wrong with a malformed service ID.
type IDErrorKind uint8

// Kinds of malformed service ID. Pos in a ServiceIDError is the offset of
// the byte named here, or -1 where the whole input is at fault.
const (
	_                    IDErrorKind = iota
	IDErrEmpty                       // nothing but an optional dot; Pos -1
	IDErrTooLong                     // over 253 bytes, trailing dot aside; Pos -1
	IDErrEmptyLabel                  // "a..b", ".a" or "a.."; Pos at the dot that ends the empty label
	IDErrLabelTooLong                // a label over 63 bytes; Pos at the label
	IDErrInvalidChar                 // an ASCII byte other than a-z, A-Z, 0-9, '-' and '.'
	IDErrNonASCII                    // a byte above 0x7f
	IDErrLeadingHyphen               // a label begins with '-'; Pos at the hyphen
	IDErrTrailingHyphen              // a label ends with '-'; Pos at the hyphen
	IDErrKeyLength                   // an "rk--" label that is not 56 bytes long; Pos at the label
	IDErrKeyEncoding                 // a key label with a byte outside base32's a-z, 2-7
	IDErrKeyNonCanonical             // stray bits in a key label's last byte, which Pos points at
	IDErrMisplacedKey                // a key label that is not leftmost, or in NewServiceID's name; Pos at the label
	IDErrKeyZero                     // a key label of the all-zero fingerprint, which pins no key; Pos at the label
)

var idErrorKindNames = [...]string{
	IDErrEmpty:           "empty",
	IDErrTooLong:         "longer than 253 bytes",
	IDErrEmptyLabel:      "empty label",
	IDErrLabelTooLong:    "label longer than 63 bytes",
	IDErrInvalidChar:     "invalid character",
	IDErrNonASCII:        "non-ASCII byte",
	IDErrLeadingHyphen:   "label begins with a hyphen",
	IDErrTrailingHyphen:  "label ends with a hyphen",
	IDErrKeyLength:       "key label is not rk-- and 52 base32 characters",
	IDErrKeyEncoding:     "key label has a non-base32 character",
	IDErrKeyNonCanonical: "key label is not in canonical form",
	IDErrMisplacedKey:    "key label is not the leftmost label",
	IDErrKeyZero:         "key label is all zero, which pins no key",
}

func (k IDErrorKind) String() string {
	if int(k) < len(idErrorKindNames) && idErrorKindNames[k] != "" {
		return idErrorKindNames[k]
	}
	return "IDErrorKind(" + strconv.Itoa(int(k)) + ")"
}

// ServiceIDError describes a malformed service ID. It wraps
// ErrInvalidServiceID.
type ServiceIDError struct {
	// Input is the text that failed to parse. Input too long to be an ID
	// is cut short (and then fails with IDErrTooLong, so Pos is -1 and
	// points nowhere into it): an error must not hold on to, or print, a
	// megabyte that a peer sent.
	Input string
	// Pos is the byte offset of the problem in Input, or -1 when the whole
	// input is at fault.
	Pos  int
	Kind IDErrorKind
}

// errEchoMax bounds how much of the input an error keeps and prints.
const errEchoMax = 64

func idError(in string, pos int, kind IDErrorKind) error {
	if len(in) > maxIDLen+1 { // longer than any ID, even with its dot
		in = strings.Clone(in[:errEchoMax]) + "..."
	}
	return &ServiceIDError{Input: in, Pos: pos, Kind: kind}
}

func (e *ServiceIDError) Error() string {
	in, cut := e.Input, ""
	if len(in) > errEchoMax {
		in, cut = in[:errEchoMax], "..."
	}
	// ASCII-only quoting shows look-alike letters for what they are.
	s := fmt.Sprintf("%v %+q%s: %v", ErrInvalidServiceID, in, cut, e.Kind)
	if e.Pos >= 0 && e.Pos < len(e.Input) {
		switch c := e.Input[e.Pos]; e.Kind {
		case IDErrInvalidChar, IDErrKeyEncoding:
			s += " " + strconv.QuoteRuneToASCII(rune(c))
		case IDErrNonASCII:
			s += fmt.Sprintf(" 0x%02x", c)
		}
	}
	if e.Pos >= 0 {
		s += " at offset " + strconv.Itoa(e.Pos)
	}
	return s
}

// Unwrap returns ErrInvalidServiceID.
func (e *ServiceIDError) Unwrap() error { return ErrInvalidServiceID }
