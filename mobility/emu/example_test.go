package emu_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/mobility/trace"
)

// A path with 40 ms each way, and a handover: the server sees the client
// at a new address afterwards. Tests run this inside synctest.Test, where
// the waits cost no wall time and the 40 ms are exact.
func Example() {
	nw := emu.NewNetwork(1)
	defer nw.Close()
	server, _ := nw.Listen(netip.MustParseAddrPort("10.0.0.1:443"))
	client, _ := nw.Listen(netip.MustParseAddrPort("10.0.1.2:5000"))
	path, _ := nw.NewPath(server.AddrPort(), emu.PathConfig{
		Up:   emu.LinkConfig{Delay: 40 * time.Millisecond},
		Down: emu.LinkConfig{Delay: 40 * time.Millisecond},
	})

	buf := make([]byte, 100)
	start := time.Now()
	client.WriteToUDPAddrPort([]byte("hello"), path.ServerAddr())
	_, from, _ := server.ReadFromUDPAddrPort(buf)
	fmt.Println("delayed 40ms:", time.Since(start) >= 40*time.Millisecond)
	fmt.Println("the server sees the client at", from)

	path.Handover(20 * time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	client.WriteToUDPAddrPort([]byte("hello again"), path.ServerAddr())
	_, from, _ = server.ReadFromUDPAddrPort(buf)
	fmt.Println("after the handover, at", from)
	// Output:
	// delayed 40ms: true
	// the server sees the client at 100.64.0.1:1024
	// after the handover, at 100.64.0.2:1024
}

// A relay on loopback in front of a UDP server, shaped like a cell and
// driven by a trace.
func ExampleRelay() {
	server, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer server.Close()
	relay, err := emu.NewRelay(emu.RelayConfig{
		Server: server.LocalAddr().(*net.UDPAddr).AddrPort(),
	})
	if err != nil {
		panic(err)
	}
	defer relay.Close()

	tr, _ := trace.ParseString("0 link rtt_ms=60 loss=0.01 rate_mbps=12\n0.1 handover outage_ms=50\n0.2 end\n")
	// Clients send to relay.ServerAddr() meanwhile.
	err = trace.Play(context.Background(), tr, relay)
	fmt.Println(err, relay.Link(emu.Up).Config().Rate)
	// Output: <nil> 12000000
}
