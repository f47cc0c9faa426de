package dns_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/dns"
	"github.com/roamnet/roam/resolve/internal/dnstest"
)

func ExampleNew() {
	// A test server on loopback stands in for the zone that would publish
	// chat.example: two hosts, the second a backup, and a pinned key.
	zone, err := dnstest.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer zone.Close()
	zone.SetSRV("_roam._udp.chat.example.", time.Hour,
		dnstest.SRV{Priority: 10, Port: 4433, Target: "a.example."},
		dnstest.SRV{Priority: 20, Port: 4433, Target: "b.example."})
	zone.SetAddrs("a.example.", time.Hour, netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10"))
	zone.SetAddrs("b.example.", time.Hour, netip.MustParseAddr("192.0.2.20"))
	key := resolve.Fingerprint{0xfe, 0xed} // in practice resolve.FingerprintOf(the service's public key)
	zone.SetTXT("_roam._udp.chat.example.", time.Hour, "key="+key.String())

	// Leave Servers empty to use the system's nameservers.
	d, err := dns.New(dns.Config{Servers: []string{zone.Addr()}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()

	ctx := context.Background()
	eps, err := d.Resolve(ctx, "chat.example")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ep := range eps {
		fmt.Println(ep.Addr, ep.Key == key)
	}
	_, err = d.Resolve(ctx, "nosuch.example")
	fmt.Println(errors.Is(err, resolve.ErrNotFound))
	// Output:
	// 192.0.2.10:4433 true
	// [2001:db8::10]:4433 true
	// 192.0.2.20:4433 true
	// true
}
