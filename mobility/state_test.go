package mobility

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestStateAddrs(t *testing.T) {
	s := state(
		ifc(1, "lo", KindLoopback, "127.0.0.1/8", "::1/128"),
		ifc(2, "eth0", KindWired, "192.168.1.10/24", "fe80::1/64", "2001:db8::10/64"),
		down(ifc(3, "wlan0", KindWiFi, "10.0.0.5/24")),
		ifc(4, "br0", KindVirtual, "192.168.1.10/24", "::ffff:172.16.0.1/112", "169.254.0.1/16"),
		ifc(5, "odd", KindUnknown, "127.0.0.2/8", "224.0.0.1/32", "0.0.0.0/0"),
	)
	require.Equal(t, addrs("192.168.1.10", "2001:db8::10", "172.16.0.1"), s.Addrs())
	require.Empty(t, State{}.Addrs())
}

func TestStateEqual(t *testing.T) {
	a := state(ifc(2, "eth0", KindWired, "192.168.1.10/24", "2001:db8::10/64"), ifc(3, "wlan0", KindWiFi, "10.0.0.5/24"))
	tests := []struct {
		name  string
		other State
		equal bool
	}{
		{"same", state(ifc(2, "eth0", KindWired, "192.168.1.10/24", "2001:db8::10/64"), ifc(3, "wlan0", KindWiFi, "10.0.0.5/24")), true},
		{"reordered", state(ifc(3, "wlan0", KindWiFi, "10.0.0.5/24"), ifc(2, "eth0", KindWired, "2001:db8::10/64", "192.168.1.10/24")), true},
		{"address gone", state(ifc(2, "eth0", KindWired, "192.168.1.10/24"), ifc(3, "wlan0", KindWiFi, "10.0.0.5/24")), false},
		{"prefix length", state(ifc(2, "eth0", KindWired, "192.168.1.10/16", "2001:db8::10/64"), ifc(3, "wlan0", KindWiFi, "10.0.0.5/24")), false},
		{"link down", state(ifc(2, "eth0", KindWired, "192.168.1.10/24", "2001:db8::10/64"), down(ifc(3, "wlan0", KindWiFi, "10.0.0.5/24"))), false},
		{"kind", state(ifc(2, "eth0", KindVirtual, "192.168.1.10/24", "2001:db8::10/64"), ifc(3, "wlan0", KindWiFi, "10.0.0.5/24")), false},
		{"renamed", state(ifc(2, "eth1", KindWired, "192.168.1.10/24", "2001:db8::10/64"), ifc(3, "wlan0", KindWiFi, "10.0.0.5/24")), false},
		{"interface gone", state(ifc(2, "eth0", KindWired, "192.168.1.10/24", "2001:db8::10/64")), false},
		{"empty", State{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.equal, a.Equal(tt.other))
			require.Equal(t, tt.equal, tt.other.Equal(a))
		})
	}
	require.True(t, State{}.Equal(State{Interfaces: []Interface{}}))
	require.True(t, state(Interface{Index: 1}).Equal(state(Interface{Index: 1, Addrs: []netip.Prefix{}})))
}

func TestMinus(t *testing.T) {
	old := addrs("192.168.1.10", "2001:db8::10", "10.0.0.5")
	now := addrs("10.0.0.5", "100.64.0.9")
	require.Equal(t, addrs("192.168.1.10", "2001:db8::10"), minus(old, now))
	require.Equal(t, addrs("100.64.0.9"), minus(now, old))
	require.Empty(t, minus(now, now))
	require.Empty(t, minus(nil, old))
}

func TestCloneIsDeep(t *testing.T) {
	src := state(ifc(3, "wlan0", KindWiFi, "10.0.0.5/24"), ifc(2, "eth0", KindWired, "192.168.1.10/24"))
	c := src.clone()
	require.Equal(t, 2, c.Interfaces[0].Index, "clone sorts")
	src.Interfaces[1].Addrs[0] = netip.MustParsePrefix("203.0.113.1/24")
	src.Interfaces[1].Name = "changed"
	require.Equal(t, "eth0", c.Interfaces[0].Name)
	require.Equal(t, "192.168.1.10/24", c.Interfaces[0].Addrs[0].String())
}

func TestPrefixOf(t *testing.T) {
	tests := []struct {
		in   net.Addr
		want string // "" for not ok
	}{
		{&net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(24, 32)}, "192.0.2.1/24"},
		{&net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(120, 128)}, "192.0.2.1/24"},
		{&net.IPNet{IP: net.ParseIP("2001:db8::1"), Mask: net.CIDRMask(64, 128)}, "2001:db8::1/64"},
		{&net.IPNet{IP: net.ParseIP("2001:db8::1"), Mask: net.IPMask{0xff, 0x00, 0xff}}, "2001:db8::1/128"},
		{&net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(64, 128)}, "192.0.2.1/32"},
		{&net.IPAddr{IP: net.ParseIP("2001:db8::2")}, "2001:db8::2/128"},
		{&net.IPNet{IP: net.IP{1, 2, 3}}, ""},
		{&net.IPAddr{}, ""},
		{&net.UDPAddr{IP: net.IPv4(192, 0, 2, 1)}, ""},
		{nil, ""},
	}
	for _, tt := range tests {
		got, ok := prefixOf(tt.in)
		if tt.want == "" {
			require.False(t, ok, "%v", tt.in)
			continue
		}
		require.True(t, ok, "%v", tt.in)
		require.Equal(t, tt.want, got.String())
	}
}

// TestReadOSState reads this machine's interfaces: it must work and come
// back normalized, whatever the machine has.
func TestReadOSState(t *testing.T) {
	s, err := ReadOSState()
	require.NoError(t, err)
	require.True(t, slices.IsSortedFunc(s.Interfaces, compareInterfaces))
	for _, i := range s.Interfaces {
		require.True(t, slices.IsSortedFunc(i.Addrs, comparePrefixes))
		if i.Name == "lo" {
			require.Equal(t, KindLoopback, i.Kind)
		}
	}
	again, err := ReadOSState()
	require.NoError(t, err)
	require.True(t, s.Equal(again), "two reads of an idle machine differ:\n%v\n%v", s, again)
}
