package resolve

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Static is a fixed table of services, for configuration files, flags and
// tests. It is safe for concurrent use. Its endpoints carry no Key and a
// zero TTL (the cache's default applies).
type Static struct {
	services map[string][]Endpoint
}

var _ Resolver = (*Static)(nil)

// NewStatic returns a *Static holding a copy of m. Keys are case-folded;
// keys that fold to the same ID are merged, in sorted key order. Invalid
// addresses (the zero netip.AddrPort, port 0) and empty keys are dropped, so
// a service left with no address answers ErrNotFound. Use ParseStatic to be
// told about such mistakes instead.
func NewStatic(m map[string][]netip.AddrPort) Resolver {
	s := &Static{services: make(map[string][]Endpoint, len(m))}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // map order is random; merging must not be
	for _, k := range keys {
		if k == "" {
			continue
		}
		key := strings.ToLower(k)
		for _, ap := range m[k] {
			if ap.Addr().IsValid() && ap.Port() != 0 {
				s.services[key] = append(s.services[key], Endpoint{Addr: ap})
			}
		}
	}
	for k, eps := range s.services {
		s.services[k] = slices.Clip(eps) // an append by a caller must copy
	}
	return s
}

// ParseStatic parses the text form of a static table:
//
//	name=ip:port,ip:port;name2=ip:port
//
// IPv6 addresses are bracketed ("[::1]:443"). Spaces around names and
// addresses are ignored, and so are empty entries, so a trailing ";" or a
// table split over lines with ";\n" is fine. A name may appear only once
// (after case folding), and an address only once per name. Errors wrap
// ErrInvalid and say which entry and which address is wrong.
func ParseStatic(s string) (*Static, error) {
	st := &Static{services: make(map[string][]Endpoint)}
	firstSeen := make(map[string]int)
	n := 0 // 1-based position among the ";"-separated entries, empty ones included
	for entry := range strings.SplitSeq(s, ";") {
		n++
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, addrs, ok := strings.Cut(entry, "=")
		if !ok {
			return nil, fmt.Errorf("%w: static entry %d %q: want name=ip:port[,ip:port...]", ErrInvalid, n, entry)
		}
		name = strings.TrimSpace(name)
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("%w: static entry %d %q: %s", ErrInvalid, n, entry, err)
		}
		key := strings.ToLower(name)
		if prev, dup := firstSeen[key]; dup {
			return nil, fmt.Errorf("%w: static entry %d %q: service %q already defined by entry %d", ErrInvalid, n, entry, key, prev)
		}
		firstSeen[key] = n
		var eps []Endpoint
		i := 0
		for a := range strings.SplitSeq(addrs, ",") {
			i++
			a = strings.TrimSpace(a)
			ap, err := netip.ParseAddrPort(a)
			switch {
			case a == "":
				return nil, fmt.Errorf("%w: static entry %d %q: address %d is empty, want ip:port", ErrInvalid, n, entry, i)
			case err != nil:
				return nil, fmt.Errorf("%w: static entry %d %q: address %d %q: want ip:port or [ipv6]:port", ErrInvalid, n, entry, i, a)
			case ap.Port() == 0:
				return nil, fmt.Errorf("%w: static entry %d %q: address %d %q: port 0", ErrInvalid, n, entry, i, a)
			case slices.ContainsFunc(eps, func(e Endpoint) bool { return e.Addr == ap }):
				return nil, fmt.Errorf("%w: static entry %d %q: address %d %q: listed twice", ErrInvalid, n, entry, i, a)
			}
			eps = append(eps, Endpoint{Addr: ap})
		}
		st.services[key] = slices.Clip(eps)
	}
	return st, nil
}

// checkName rejects names that could not be written back by String or
// that would fold ambiguously.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty service name")
	case !utf8.ValidString(name):
		return errors.New("service name is not UTF-8")
	case strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return fmt.Errorf("service name %q contains a space or control character", name)
	case strings.ContainsAny(name, ",;="):
		return fmt.Errorf("service name %q contains one of ,;=", name)
	}
	return nil
}

// Resolve returns the table's endpoints for service. The slice is shared
// and immutable.
func (s *Static) Resolve(ctx context.Context, service string) ([]Endpoint, error) {
	key, err := serviceKey("resolve", service)
	if err != nil {
		return nil, err
	}
	if eps := s.services[key]; len(eps) > 0 {
		return eps, nil
	}
	return nil, &Error{Op: "resolve", Service: key, Err: ErrNotFound}
}

// String returns the table in the form ParseStatic reads, with names in
// sorted order, so that it can be logged or written back to a flag.
func (s *Static) String() string {
	keys := make([]string, 0, len(s.services))
	for k := range s.services {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(k)
		b.WriteByte('=')
		for j, ep := range s.services[k] {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(ep.Addr.String())
		}
	}
	return b.String()
}
