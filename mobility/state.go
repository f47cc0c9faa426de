package mobility

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
)

// Interface is one network interface as the Monitor sees it.
type Interface struct {
	Name  string
	Index int
	// Up reports that the link is administratively up and running (has a
	// carrier, is associated): an address on a link that is not Up cannot
	// carry traffic, so State.Addrs leaves it out.
	Up    bool
	Kind  Kind
	Addrs []netip.Prefix
}

// State is a snapshot of the machine's interfaces. The Monitor and
// ReadOSState return it normalized: interfaces sorted by Index, each
// one's Addrs sorted. States are values: the Monitor never modifies one it
// has handed out, and callers should not either.
type State struct {
	Interfaces []Interface
}

// usable reports whether a is an address a socket can be bound to for
// traffic beyond this machine: unicast, not loopback, not link-local (which
// needs a zone and reaches one link only), not unspecified.
func usable(a netip.Addr) bool {
	return a.Unmap().IsGlobalUnicast()
}

// Addrs returns the usable unicast addresses of the interfaces that are
// Up, excluding loopback interfaces and loopback, link-local, multicast and
// unspecified addresses; in interface order, each address once.
func (s State) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, ifc := range s.Interfaces {
		if !ifc.Up || ifc.Kind == KindLoopback {
			continue
		}
		for _, p := range ifc.Addrs {
			a := p.Addr().Unmap()
			if usable(a) && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// Equal reports whether s and o describe the same interfaces with the same
// flags, kinds and addresses. Order does not matter.
func (s State) Equal(o State) bool {
	s, o = s.normalized(), o.normalized()
	return slices.EqualFunc(s.Interfaces, o.Interfaces, func(a, b Interface) bool {
		return a.Name == b.Name && a.Index == b.Index && a.Up == b.Up &&
			a.Kind == b.Kind && slices.Equal(a.Addrs, b.Addrs)
	})
}

func compareInterfaces(a, b Interface) int {
	return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.Name, b.Name))
}

func comparePrefixes(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// normalized returns s sorted, copying only when s is not sorted yet, so
// that a State from a ReadState hook the caller keeps reusing is never
// modified.
func (s State) normalized() State {
	sorted := slices.IsSortedFunc(s.Interfaces, compareInterfaces)
	for _, ifc := range s.Interfaces {
		sorted = sorted && slices.IsSortedFunc(ifc.Addrs, comparePrefixes)
	}
	if sorted {
		return s
	}
	return s.clone()
}

// clone returns a deep, sorted copy of s, so that a State the Monitor keeps
// shares no memory with one a ReadState hook may later change.
func (s State) clone() State {
	if s.Interfaces == nil {
		return State{}
	}
	out := State{Interfaces: make([]Interface, len(s.Interfaces))}
	for i, ifc := range s.Interfaces {
		ifc.Addrs = slices.Clone(ifc.Addrs)
		slices.SortFunc(ifc.Addrs, comparePrefixes)
		out.Interfaces[i] = ifc
	}
	slices.SortStableFunc(out.Interfaces, compareInterfaces)
	return out
}

// minus returns the addresses in a that are not in b, in a's order.
func minus(a, b []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// ReadOSState reads the machine's interfaces and addresses from the
// operating system (net.Interfaces), with the built-in kind detection: the
// OS's own answers where it gives them (Linux sysfs), else ClassifyName.
// It is what a Monitor uses when MonitorConfig.ReadState is nil; wrap it
// to filter interfaces out.
//
// On Linux it reads the network namespace of the calling thread.
func ReadOSState() (State, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return State{}, err
	}
	s := State{Interfaces: make([]Interface, 0, len(ifs))}
	for _, ni := range ifs {
		ifc := Interface{
			Name:  ni.Name,
			Index: ni.Index,
			Up:    ni.Flags&net.FlagUp != 0 && ni.Flags&net.FlagRunning != 0,
			Kind:  detectKind(ni.Name, ni.Flags),
		}
		addrs, err := ni.Addrs()
		if err != nil {
			// The interface may have vanished between the two reads; the
			// next event or poll will see the new truth.
			addrs = nil
		}
		for _, a := range addrs {
			if p, ok := prefixOf(a); ok {
				ifc.Addrs = append(ifc.Addrs, p)
			}
		}
		s.Interfaces = append(s.Interfaces, ifc)
	}
	return s.clone(), nil
}

// prefixOf converts the net.Addr values net.Interface.Addrs returns
// (*net.IPNet, or *net.IPAddr on some systems) to a netip.Prefix.
func prefixOf(a net.Addr) (netip.Prefix, bool) {
	var ip net.IP
	bits, size := -1, 0
	switch v := a.(type) {
	case *net.IPNet:
		ip = v.IP
		bits, size = v.Mask.Size()
		if size == 0 {
			bits = -1 // a non-canonical mask: take the address as a host
		}
	case *net.IPAddr:
		ip = v.IP
	default:
		return netip.Prefix{}, false
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	if addr.Is4In6() && size == 128 && bits >= 96 {
		bits -= 96 // an IPv4 address with a 16-byte mask
	}
	addr = addr.Unmap()
	if bits < 0 || bits > addr.BitLen() {
		bits = addr.BitLen()
	}
	return netip.PrefixFrom(addr, bits), true
}

// detectKind is the built-in classification of one interface.
func detectKind(name string, flags net.Flags) Kind {
	if flags&net.FlagLoopback != 0 {
		return KindLoopback
	}
	if k := osKind(sysfsNet, name); k != KindUnknown {
		return k
	}
	k := ClassifyName(name)
	if k == KindUnknown && osVirtual(sysfsNet, name) {
		k = KindVirtual
	}
	return k
}
