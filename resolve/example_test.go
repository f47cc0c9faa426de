package resolve_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/roamnet/roam/resolve"
)

func ExampleNewMemory() {
	ctx := context.Background()
	m := resolve.NewMemory()
	defer m.Close()

	reg, err := m.Register(ctx, "Chat", resolve.Endpoint{Addr: netip.MustParseAddrPort("192.0.2.10:4433")})
	if err != nil {
		fmt.Println(err)
		return
	}
	eps, _ := m.Resolve(ctx, "chat") // IDs are case-folded
	fmt.Println(eps)

	reg.Close() // withdraw
	_, err = m.Resolve(ctx, "chat")
	fmt.Println(err)
	fmt.Println(errors.Is(err, resolve.ErrNotFound))
	// Output:
	// [192.0.2.10:4433]
	// resolve chat: not found
	// true
}

func ExampleNewCache() {
	ctx := context.Background()
	backend := resolve.NewStatic(map[string][]netip.AddrPort{
		"chat": {netip.MustParseAddrPort("192.0.2.10:4433")},
	})
	c := resolve.NewCache(backend, resolve.CacheConfig{})
	defer c.Close()

	for range 3 {
		eps, _ := c.Resolve(ctx, "chat")
		fmt.Println(eps[0].Addr)
	}
	st := c.Stats()
	fmt.Printf("hits=%d misses=%d lookups=%d\n", st.Hits, st.Misses, st.Lookups)

	// Abilities the Cache does not add to are found on its backend.
	_, canRegister := c.Unwrap().(resolve.Registrar)
	fmt.Println("registrar:", canRegister)
	// Output:
	// 192.0.2.10:4433
	// 192.0.2.10:4433
	// 192.0.2.10:4433
	// hits=2 misses=1 lookups=1
	// registrar: false
}

func ExampleNewStatic() {
	r := resolve.NewStatic(map[string][]netip.AddrPort{
		"Web": {netip.MustParseAddrPort("192.0.2.1:443"), netip.MustParseAddrPort("[2001:db8::1]:443")},
	})
	eps, _ := r.Resolve(context.Background(), "web")
	for _, ep := range eps {
		fmt.Println(ep)
	}
	// Output:
	// 192.0.2.1:443
	// [2001:db8::1]:443
}

func ExampleParseStatic() {
	s, err := resolve.ParseStatic("web=192.0.2.1:443, 192.0.2.2:443; db=[2001:db8::5]:5432")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s)

	_, err = resolve.ParseStatic("web=192.0.2.1:443;db=2001:db8::5:5432")
	fmt.Println(err)
	// Output:
	// db=[2001:db8::5]:5432;web=192.0.2.1:443,192.0.2.2:443
	// resolve: invalid argument: static entry 2 "db=2001:db8::5:5432": address 1 "2001:db8::5:5432": want ip:port or [ipv6]:port
}

func ExampleError() {
	_, err := resolve.NewStatic(nil).Resolve(context.Background(), "Web")
	var e *resolve.Error
	if errors.As(err, &e) {
		fmt.Println(e.Op, e.Service, errors.Is(e, resolve.ErrNotFound))
	}
	// Output:
	// resolve web true
}
