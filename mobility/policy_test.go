package mobility

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// ifc builds an Interface for tables: up, with the given prefixes.
func ifc(index int, name string, kind Kind, prefixes ...string) Interface {
	i := Interface{Name: name, Index: index, Up: true, Kind: kind}
	for _, p := range prefixes {
		i.Addrs = append(i.Addrs, netip.MustParsePrefix(p))
	}
	return i
}

func down(i Interface) Interface { i.Up = false; return i }

func state(ifs ...Interface) State { return State{Interfaces: ifs} }

func TestPolicyChoose(t *testing.T) {
	lo := ifc(1, "lo", KindLoopback, "127.0.0.1/8", "::1/128")
	eth := ifc(2, "eth0", KindWired, "192.168.1.10/24")
	wifi := ifc(3, "wlan0", KindWiFi, "10.0.0.5/24", "fe80::1/64")
	cell := ifc(4, "wwan0", KindCellular, "100.70.1.2/10", "2001:db8:c::7/64")
	vpn := ifc(5, "tailscale0", KindVirtual, "100.100.1.1/32")
	unk := ifc(6, "foo0", KindUnknown, "198.51.100.9/24")

	tests := []struct {
		name   string
		policy Policy
		state  State
		want   string // "" for none
	}{
		{"empty state", Policy{}, State{}, ""},
		{"only loopback", Policy{}, state(lo), ""},
		{"wired beats wifi and cellular", Policy{}, state(lo, eth, wifi, cell), "192.168.1.10"},
		{"wifi beats cellular", Policy{}, state(lo, wifi, cell), "10.0.0.5"},
		{"down wired is skipped", Policy{}, state(down(eth), wifi), "10.0.0.5"},
		{"cellular: global v6 beats CGNAT v4", Policy{}, state(cell), "2001:db8:c::7"},
		{"cellular v4 only", Policy{Family: 4}, state(cell), "100.70.1.2"},
		{"family 6 skips v4-only kinds", Policy{Family: 6}, state(eth, wifi, cell), "2001:db8:c::7"},
		{"family 6 with no v6", Policy{Family: 6}, state(eth, wifi), ""},
		{"invalid family", Policy{Family: 5}, state(eth), ""},
		{"unknown beats virtual", Policy{}, state(vpn, unk), "198.51.100.9"},
		{"virtual when alone", Policy{}, state(lo, vpn), "100.100.1.1"},
		{"link-local only", Policy{}, state(ifc(3, "wlan0", KindWiFi, "fe80::1/64", "169.254.3.4/16")), ""},
		{"custom order", Policy{Prefer: []Kind{KindCellular, KindWiFi}}, state(eth, wifi, cell), "2001:db8:c::7"},
		{"unlisted kinds never chosen", Policy{Prefer: []Kind{KindWiFi}}, state(eth, cell), ""},
		{"loopback in Prefer is still never chosen", Policy{Prefer: []Kind{KindLoopback}}, state(lo), ""},
		{"global beats private in one kind", Policy{}, state(
			ifc(2, "eth0", KindWired, "10.1.1.1/8", "fd00::1/64", "203.0.113.5/24")), "203.0.113.5"},
		{"v4 before v6 on ties", Policy{}, state(
			ifc(2, "eth0", KindWired, "2001:db8::1/64", "203.0.113.5/24")), "203.0.113.5"},
		{"stable order: lowest index, then lowest address", Policy{}, state(
			ifc(7, "eth1", KindWired, "192.168.2.1/24"),
			ifc(2, "eth0", KindWired, "192.168.1.9/24", "192.168.1.3/24")), "192.168.1.3"},
		{"Classify overrides kind", Policy{Classify: func(i Interface) Kind {
			if i.Name == "wwan0" {
				return KindWired
			}
			return i.Kind
		}}, state(eth, cell), "2001:db8:c::7"},
		{"Classify to loopback hides", Policy{Classify: func(Interface) Kind { return KindLoopback }}, state(eth), ""},
		{"mapped v4 is unmapped", Policy{}, state(ifc(2, "eth0", KindWired, "::ffff:192.0.2.1/128")), "192.0.2.1"},
		{"unspecified and multicast are skipped", Policy{}, state(ifc(2, "eth0", KindWired, "0.0.0.0/0", "224.0.0.1/32")), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.policy.Choose(tt.state)
			if tt.want == "" {
				require.False(t, ok, "chose %v", got)
				require.False(t, got.IsValid())
				return
			}
			require.True(t, ok)
			require.Equal(t, netip.MustParseAddr(tt.want), got)
		})
	}
}

// TestPolicySticky checks that the Monitor's pick survives an address
// that only ties with it, and yields to a better one.
func TestPolicySticky(t *testing.T) {
	var p Policy
	cur := netip.MustParseAddr("192.168.1.9")
	tie := state(ifc(2, "eth0", KindWired, "192.168.1.3/24", "192.168.1.9/24")).normalized()
	got, ok := p.choose(tie, cur)
	require.True(t, ok)
	require.Equal(t, cur, got, "a tying address must not replace the current one")

	better := state(ifc(2, "eth0", KindWired, "203.0.113.5/24", "192.168.1.9/24")).normalized()
	got, _ = p.choose(better, cur)
	require.Equal(t, netip.MustParseAddr("203.0.113.5"), got)

	// The current address now on a worse interface loses.
	moved := state(ifc(2, "eth0", KindWired, "192.168.1.3/24"), ifc(3, "wlan0", KindWiFi, "192.168.1.9/24")).normalized()
	got, _ = p.choose(moved, cur)
	require.Equal(t, netip.MustParseAddr("192.168.1.3"), got)
}

// TestPolicyNoMutation checks that Choose leaves its State alone even
// when it must sort it.
func TestPolicyNoMutation(t *testing.T) {
	s := state(ifc(9, "eth1", KindWired, "192.168.2.9/24", "192.168.2.1/24"), ifc(2, "eth0", KindWired, "10.0.0.1/8"))
	before := s.clone()
	_, _ = Policy{}.Choose(s)
	require.Equal(t, 9, s.Interfaces[0].Index)
	require.Equal(t, "192.168.2.9/24", s.Interfaces[0].Addrs[0].String())
	require.True(t, s.Equal(before))
}

func TestPolicyAllowed(t *testing.T) {
	lo := ifc(1, "lo", KindLoopback, "127.0.0.1/8", "::1/128")
	eth := ifc(2, "eth0", KindWired, "192.168.1.10/24")
	wifi := ifc(3, "wlan0", KindWiFi, "10.0.0.5/24", "fe80::1/64")
	cell := ifc(4, "wwan0", KindCellular, "100.70.1.2/10", "2001:db8:c::7/64")
	s := state(lo, cell, down(ifc(5, "eth1", KindWired, "192.168.9.9/24")), wifi, eth)
	for _, tc := range []struct {
		name   string
		policy Policy
		want   []string
	}{
		{"every usable address, best first", Policy{}, []string{"192.168.1.10", "10.0.0.5", "2001:db8:c::7", "100.70.1.2"}},
		{"off cellular", Policy{Prefer: []Kind{KindWiFi, KindWired}}, []string{"10.0.0.5", "192.168.1.10"}},
		{"IPv6 only", Policy{Family: 6}, []string{"2001:db8:c::7"}},
		{"invalid family", Policy{Family: 5}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, a := range tc.policy.Allowed(s) {
				got = append(got, a.String())
			}
			require.Equal(t, tc.want, got)
			if len(tc.want) > 0 {
				best, _ := tc.policy.Choose(s)
				require.Equal(t, best.String(), got[0], "the first is Choose's pick")
			}
		})
	}
}
