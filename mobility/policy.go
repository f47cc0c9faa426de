package mobility

import (
	"net/netip"
	"slices"
)

// defaultPrefer is the kind order of a Policy with an empty Prefer: a cable
// beats Wi-Fi, Wi-Fi beats (metered, slower) cellular, and links the
// machine could not classify come before virtual ones, whose addresses are
// usually bridges and tunnels rather than a way out.
var defaultPrefer = []Kind{KindWired, KindWiFi, KindCellular, KindUnknown, KindVirtual}

// Policy decides which local address a program should use. Its zero value
// is ready to use.
type Policy struct {
	// Prefer orders kinds, most preferred first. Kinds missing from a
	// non-empty Prefer are never chosen: Prefer: []Kind{KindWiFi,
	// KindWired} keeps a program off cellular. If nil or empty: wired,
	// Wi-Fi, cellular, unknown, virtual. Loopback is never chosen.
	Prefer []Kind

	// Family restricts the choice to IPv4 (4) or IPv6 (6) addresses. If
	// zero, either, IPv4 first when all else ties. Any other value chooses
	// nothing (NewMonitor rejects it).
	Family int

	// Classify, if not nil, replaces each interface's detected Kind (the
	// Interface.Kind field, from ReadOSState's rules; see ClassifyName)
	// when the Policy ranks it. Return ifc.Kind to keep the detected kind:
	//
	//	Classify: func(ifc mobility.Interface) mobility.Kind {
	//		if ifc.Name == "en0" { // a Mac whose en0 is Wi-Fi
	//			return mobility.KindWiFi
	//		}
	//		return ifc.Kind
	//	}
	Classify func(Interface) Kind
}

// rank orders candidate addresses: smaller is better, field by field.
type rank struct {
	kind    int // index in Prefer
	private int // 0 for global addresses, 1 for private, ULA and CGNAT ones
	family  int // 0 for IPv4, 1 for IPv6
}

func (r rank) less(o rank) bool {
	if r.kind != o.kind {
		return r.kind < o.kind
	}
	if r.private != o.private {
		return r.private < o.private
	}
	return r.family < o.family
}

// cgnat is RFC 6598 shared address space: carrier-grade NAT hands these
// out, and like RFC 1918 addresses they are not reachable from outside.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Choose returns the preferred local address in s, and false if s has
// none that the Policy allows. Among the usable addresses of s (those of
// State.Addrs) it picks, in order: the interface kind earliest in Prefer;
// then a global address over a private one (RFC 1918, RFC 6598 CGNAT, IPv6
// ULA); then, when Family is zero, IPv4 over IPv6; then the first in s's
// order (interfaces by index, addresses sorted), so that equal States
// always give the same answer.
func (p Policy) Choose(s State) (netip.Addr, bool) {
	return p.choose(s.normalized(), netip.Addr{})
}

// choose is Choose with stickiness: if keep is among the best-ranked
// addresses of s, it stays chosen. Without this, adding an address that
// merely ties with the current one (a new IPv6 temporary address, a
// second IP on the same link) could sort first and force a needless
// rebind. s must be normalized.
func (p Policy) choose(s State, keep netip.Addr) (netip.Addr, bool) {
	var (
		best     netip.Addr
		bestRank rank
		found    bool
		keepRank rank
		kept     bool
	)
	p.eachAllowed(s, func(a netip.Addr, r rank) {
		if !found || r.less(bestRank) {
			best, bestRank, found = a, r, true
		}
		if a == keep && (!kept || r.less(keepRank)) {
			keepRank, kept = r, true
		}
	})
	if kept && !bestRank.less(keepRank) {
		return keep, true
	}
	return best, found
}

// eachAllowed calls fn with every usable address of s that the Policy
// allows (its kind is in Prefer, its family matches Family) and its rank,
// in s's order. An address on two interfaces comes twice.
func (p Policy) eachAllowed(s State, fn func(netip.Addr, rank)) {
	if p.Family != 0 && p.Family != 4 && p.Family != 6 {
		return
	}
	prefer := p.Prefer
	if len(prefer) == 0 {
		prefer = defaultPrefer
	}
	for _, ifc := range s.Interfaces {
		if !ifc.Up || ifc.Kind == KindLoopback {
			continue
		}
		kind := ifc.Kind
		if p.Classify != nil {
			kind = p.Classify(ifc)
		}
		ki := slices.Index(prefer, kind)
		if ki < 0 || kind == KindLoopback {
			continue
		}
		for _, pfx := range ifc.Addrs {
			a := pfx.Addr().Unmap()
			if !usable(a) || (p.Family == 4 && !a.Is4()) || (p.Family == 6 && !a.Is6()) {
				continue
			}
			r := rank{kind: ki}
			if a.IsPrivate() || cgnat.Contains(a) {
				r.private = 1
			}
			if a.Is6() {
				r.family = 1
			}
			fn(a, r)
		}
	}
}

// Allowed returns every usable address of s that the Policy allows, best
// first in the order Choose ranks them: the addresses a program with a
// socket per path (sal.Config.Paths) can use at once.
func (p Policy) Allowed(s State) []netip.Addr {
	type ranked struct {
		a netip.Addr
		r rank
	}
	var out []ranked
	p.eachAllowed(s.normalized(), func(a netip.Addr, r rank) {
		if !slices.ContainsFunc(out, func(x ranked) bool { return x.a == a }) {
			out = append(out, ranked{a, r})
		}
	})
	slices.SortStableFunc(out, func(x, y ranked) int {
		switch {
		case x.r.less(y.r):
			return -1
		case y.r.less(x.r):
			return 1
		}
		return 0
	})
	addrs := make([]netip.Addr, len(out))
	for i, x := range out {
		addrs[i] = x.a
	}
	return addrs
}
