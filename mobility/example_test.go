package mobility_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/roamnet/roam/mobility"
)

// A Monitor over an injected ReadState, as a test would use it: the phone
// leaves Wi-Fi range, and the Change says to rebind to cellular.
func ExampleMonitor() {
	wifi := mobility.Interface{Name: "wlan0", Index: 2, Up: true, Kind: mobility.KindWiFi,
		Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.1.20/24")}}
	cell := mobility.Interface{Name: "rmnet0", Index: 3, Up: true, Kind: mobility.KindCellular,
		Addrs: []netip.Prefix{netip.MustParsePrefix("100.70.1.2/10")}}

	var mu sync.Mutex
	now := mobility.State{Interfaces: []mobility.Interface{wifi, cell}}
	m, err := mobility.NewMonitor(mobility.MonitorConfig{
		ReadState: func() (mobility.State, error) {
			mu.Lock()
			defer mu.Unlock()
			return now, nil
		},
		DisableNetlink: true,
		PollInterval:   time.Hour, // this example Pokes instead
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	changes := m.Subscribe(context.Background())
	fmt.Println("preferred:", m.Preferred())

	mu.Lock()
	wifi.Up = false // out of range
	now = mobility.State{Interfaces: []mobility.Interface{wifi, cell}}
	mu.Unlock()
	m.Poke()

	c := <-changes
	fmt.Println("removed:", c.Removed)
	if c.PreferredChanged {
		fmt.Printf("rebind to %v\n", netip.AddrPortFrom(c.Preferred, 0))
	}
	// Output:
	// preferred: 192.168.1.20
	// removed: [192.168.1.20]
	// rebind to 100.70.1.2:0
}

func ExamplePolicy_Choose() {
	s := mobility.State{Interfaces: []mobility.Interface{
		{Name: "lo", Index: 1, Up: true, Kind: mobility.KindLoopback,
			Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
		{Name: "wlan0", Index: 2, Up: true, Kind: mobility.KindWiFi,
			Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.1.20/24"), netip.MustParsePrefix("2001:db8:1::20/64")}},
		{Name: "wwan0", Index: 3, Up: true, Kind: mobility.KindCellular,
			Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:c::7/64")}},
	}}

	// The default: Wi-Fi over cellular, and a global address over a
	// private one.
	a, _ := mobility.Policy{}.Choose(s)
	fmt.Println(a)

	// Only IPv4.
	a, _ = mobility.Policy{Family: 4}.Choose(s)
	fmt.Println(a)

	// Cellular only, and IPv4 only: nothing qualifies.
	_, ok := mobility.Policy{Prefer: []mobility.Kind{mobility.KindCellular}, Family: 4}.Choose(s)
	fmt.Println(ok)
	// Output:
	// 2001:db8:1::20
	// 192.168.1.20
	// false
}
