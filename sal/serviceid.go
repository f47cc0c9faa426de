package sal

import (
	"encoding/base32"
	"strings"

	"github.com/roamnet/roam/resolve"
)

// Limits of the service-ID syntax, those of DNS names so that every ID can
// also be looked up as one.
const (
	maxIDLen    = 253
	maxLabelLen = 63
)

// keyLabelPrefix begins a key label. Hyphens in positions 3 and 4 put it in
// the reserved-LDH space of RFC 5890, where no registered DNS label lives,
// so a key label can never be mistaken for part of a real name.
const keyLabelPrefix = "rk--"

// keyLabelLen is the length of a whole key label: the prefix and the
// fingerprint's 52 base32 characters.
const keyLabelLen = len(keyLabelPrefix) + resolve.FingerprintLen

// lowerB32 is resolve.Fingerprint's text encoding, lowercase from the start
// so that encoding needs no second pass (and no second allocation).
var lowerB32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// b32val maps a lowercase base32 character to its 5-bit value, and every
// other byte to 0xff.
var b32val = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "abcdefghijklmnopqrstuvwxyz234567" {
		t[c] = byte(i)
	}
	return t
}()

// ServiceID names a service: a DNS-style name such as "echo.demo",
// optionally led by a key label, "rk--<fingerprint>", that pins the
// service's public key and so makes the ID self-certifying. The three
// forms are "rk--<fp>.echo.demo" (key and name), "rk--<fp>" (key only) and
// "echo.demo" (name only).
//
// ServiceIDs are comparable and may be used as map keys; two IDs are equal
// exactly when their canonical text forms are. The zero value is no ID:
// ParseServiceID never returns it, and dialing it fails.
type ServiceID struct {
	name string // lowercase, no trailing dot; "" when the ID is key-only
	key  resolve.Fingerprint
}

// ParseServiceID parses a service ID.
//
// Labels are 1 to 63 bytes of letters, digits and hyphens, and neither
// begin nor end with a hyphen; upper case is folded to lower case; one
// trailing dot is dropped; the whole ID is at most 253 bytes. A label that
// begins with "rk--" must be a key label, "rk--" followed by the 52
// characters of a resolve.Fingerprint in its canonical form, not the zero
// one, and must be the leftmost label: a mistyped or zero pin is an error
// rather than an unpinned name.
//
// Errors wrap ErrInvalidServiceID and are *ServiceIDError values that
// describe the first problem met scanning from the left; a label's length
// and key form are checked once its last byte has been read.
func ParseServiceID(s string) (ServiceID, error) {
	return parseServiceID(s, true)
}

// MustParseServiceID is ParseServiceID for IDs known to be valid, as in
// tests and examples; it panics on error.
func MustParseServiceID(s string) ServiceID {
	id, err := ParseServiceID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// NewServiceID returns the ID with the given name and key. Either may be
// empty (the zero Fingerprint), not both. The name is checked as by
// ParseServiceID and may not contain a key label. When key is not zero,
// an error's Input and Pos refer to the whole ID, "rk--<fp>.name".
func NewServiceID(name string, key resolve.Fingerprint) (ServiceID, error) {
	if key.IsZero() {
		return parseServiceID(name, false)
	}
	if name == "" {
		return ServiceID{key: key}, nil
	}
	return parseServiceID(keyLabel(key, name), true)
}

// parseServiceID implements ParseServiceID; allowKey says whether a key
// label may lead the ID.
func parseServiceID(in string, allowKey bool) (ServiceID, error) {
	s := in
	if n := len(s); n > 0 && s[n-1] == '.' {
		s = s[:n-1]
	}
	if s == "" {
		return ServiceID{}, idError(in, -1, IDErrEmpty)
	}
	if len(s) > maxIDLen {
		return ServiceID{}, idError(in, -1, IDErrTooLong)
	}
	s = foldASCII(s)

	var id ServiceID
	start := 0 // of the current label
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			c := s[i]
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
				continue
			case c == '-':
				if i == start {
					return ServiceID{}, idError(in, i, IDErrLeadingHyphen)
				}
				continue
			case c >= 0x80:
				return ServiceID{}, idError(in, i, IDErrNonASCII)
			case c != '.':
				return ServiceID{}, idError(in, i, IDErrInvalidChar)
			}
		}
		// s[start:i] is a whole label.
		switch n := i - start; {
		case n == 0:
			return ServiceID{}, idError(in, i, IDErrEmptyLabel)
		case n > maxLabelLen:
			return ServiceID{}, idError(in, start, IDErrLabelTooLong)
		}
		if !strings.HasPrefix(s[start:i], keyLabelPrefix) {
			if s[i-1] == '-' {
				return ServiceID{}, idError(in, i-1, IDErrTrailingHyphen)
			}
		} else {
			if start != 0 || !allowKey {
				return ServiceID{}, idError(in, start, IDErrMisplacedKey)
			}
			k, pos, kind := decodeKeyLabel(s[:i])
			if kind != 0 {
				return ServiceID{}, idError(in, pos, kind)
			}
			id.key = k
		}
		start = i + 1
	}
	if id.key.IsZero() {
		id.name = s
	} else if len(s) > keyLabelLen {
		id.name = s[keyLabelLen+1:]
	}
	return id, nil
}

// foldASCII lowers A-Z and leaves every other byte alone, so that offsets
// into the result are offsets into the input (strings.ToLower would turn
// invalid UTF-8 into U+FFFD and shift them). Lowercase input is returned
// as is, without a copy.
func foldASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			var b strings.Builder
			b.Grow(len(s))
			b.WriteString(s[:i])
			for ; i < len(s); i++ {
				c := s[i]
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				b.WriteByte(c)
			}
			return b.String()
		}
	}
	return s
}

// decodeKeyLabel decodes a lowercase key label, and on failure says where
// and why. It decodes by hand because encoding/base32 would need the text
// as a []byte, an allocation per parse, and accepts stray bits in the last
// character, which would give one key two spellings.
func decodeKeyLabel(label string) (fp resolve.Fingerprint, pos int, kind IDErrorKind) {
	if len(label) != keyLabelLen {
		return fp, 0, IDErrKeyLength
	}
	var acc uint // only the low bits not yet emitted matter
	bits, n := 0, 0
	for i := len(keyLabelPrefix); i < len(label); i++ {
		v := b32val[label[i]]
		if v == 0xff {
			return resolve.Fingerprint{}, i, IDErrKeyEncoding
		}
		acc = acc<<5 | uint(v)
		bits += 5
		if bits >= 8 {
			bits -= 8
			fp[n] = byte(acc >> bits)
			n++
		}
	}
	// 52 characters carry 260 bits for 256; the 4 left over must be zero.
	if acc&(1<<bits-1) != 0 {
		return resolve.Fingerprint{}, len(label) - 1, IDErrKeyNonCanonical
	}
	// The zero fingerprint is no key: the ID would pin nothing, and be
	// dialed without a check, under a name that says it pins a key.
	if fp.IsZero() {
		return fp, 0, IDErrKeyZero
	}
	return fp, 0, 0
}

// keyLabel returns "rk--<fp>", followed by "." and name when name is not
// empty, with a single allocation.
func keyLabel(key resolve.Fingerprint, name string) string {
	var enc [resolve.FingerprintLen]byte
	lowerB32.Encode(enc[:], key[:])
	var b strings.Builder
	n := keyLabelLen
	if name != "" {
		n += 1 + len(name)
	}
	b.Grow(n)
	b.WriteString(keyLabelPrefix)
	b.Write(enc[:])
	if name != "" {
		b.WriteByte('.')
		b.WriteString(name)
	}
	return b.String()
}

// String returns the canonical text of the ID: "rk--<fp>.name", "rk--<fp>"
// or "name", in lower case without a trailing dot; "" for the zero ID.
func (id ServiceID) String() string {
	if id.key.IsZero() {
		return id.name
	}
	return keyLabel(id.key, id.name)
}

// Name returns the human-readable part of the ID, "" if it is key-only.
func (id ServiceID) Name() string { return id.name }

// Key returns the key the ID pins, if it pins one.
func (id ServiceID) Key() (resolve.Fingerprint, bool) { return id.key, !id.key.IsZero() }

// IsZero reports whether id is the zero ServiceID, which names nothing.
func (id ServiceID) IsZero() bool { return id == ServiceID{} }

// WithKey returns id pinned to k instead of to its own key, if any; a zero
// k removes the pin. A name longer than 196 bytes leaves no room for a key
// label within 253 bytes, so its pinned form does not parse back.
func (id ServiceID) WithKey(k resolve.Fingerprint) ServiceID {
	id.key = k
	return id
}

// LookupName is what resolvers are asked for: the name, or for a key-only
// ID the key label, the only name such a service has.
func (id ServiceID) LookupName() string {
	if id.name != "" || id.key.IsZero() {
		return id.name
	}
	return keyLabel(id.key, "")
}

// MarshalText implements encoding.TextMarshaler. The zero ID marshals to
// empty text, as netip.Addr does, so that unset fields survive a round
// trip through JSON.
func (id ServiceID) MarshalText() ([]byte, error) {
	return []byte(id.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler. Empty text gives the
// zero ID; anything else must parse.
func (id *ServiceID) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*id = ServiceID{}
		return nil
	}
	v, err := ParseServiceID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
