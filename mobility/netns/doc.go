// Package netns builds real network namespaces for tests of mobile
// programs: a client with two interfaces, "wifi" and "cell", each a veth
// link to a server, on which tests add and delete addresses, take links
// up and down and shape their rate with tc's token bucket filter, as the
// kernel sees it on a phone. Where package emu emulates a path in
// userspace, this is the kernel's own behaviour: route changes, source
// address selection, interfaces that vanish.
//
//	func TestFailover(t *testing.T) {
//		topo := netns.New(t) // skips unless root on Linux with iproute2
//		srv, _ := topo.Server.ListenUDP(netip.AddrPortFrom(netns.ServerAddr, 443))
//		cli, _ := topo.Client.ListenUDP(netip.MustParseAddrPort("0.0.0.0:0"))
//		// ... traffic leaves over wifi ...
//		topo.Client.SetDown("wifi")
//		// ... now over cell, from the cell address ...
//	}
//
// Both links reach the server's one address, and the client routes by
// source address (ip rule from <subnet> table <n>), so a client with a
// socket bound to each address of Topology.Links has two independent
// paths, as a multipath Host or MPTCP wants. Topology.Cut silences one
// link both ways, keeping the client's address and routes (a handover or
// a tunnel); Topology.Restore ends it.
//
// New deletes both namespaces when the test ends, however it ends
// (pass, fail, panic); a test of the package checks that no namespace or
// link is left behind. Only a killed process leaves its namespaces,
// named with Prefix, for `ip netns del`.
//
// Namespace.Do runs a function on an OS thread inside a namespace:
// sockets it opens stay in the namespace, and may be used from any
// goroutine. Namespace.Command runs another program inside it.
//
// The addresses (10.199.0.0/16) exist only inside the namespaces a test
// made, so tests built on this package send nothing outside them. The
// package runs iproute2's ip and tc, and needs root.
package netns
