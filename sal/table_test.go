package sal

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/stretchr/testify/require"
)

func eps(addrs ...string) []resolve.Endpoint {
	var out []resolve.Endpoint
	for _, a := range addrs {
		out = append(out, resolve.Endpoint{Addr: netip.MustParseAddrPort(a)})
	}
	return out
}

func TestServiceTableLookup(t *testing.T) {
	var tab ServiceTable
	for _, r := range []Rule{
		{Service: "demo", Action: ActionEndpoints, Endpoints: eps("192.0.2.1:1")},
		{Service: "Echo.Demo.", Action: ActionDrop},
		{Service: "x.echo.demo"}, // resolve, shadowing the drop above it
		{Service: testKL + ".echo.demo", Action: ActionEndpoints, Endpoints: eps("192.0.2.2:2")},
		{Service: testKL, Action: ActionEndpoints, Endpoints: eps("192.0.2.3:3")},
		{Service: "com", Action: ActionDrop},
	} {
		require.NoError(t, tab.Set(r), r.Service)
	}
	for _, tc := range []struct {
		id, rule string // rule "-" means no match
	}{
		{"demo", "demo"},
		{"x.demo", "demo"},
		{"echo.demo", "echo.demo"},
		{"ECHO.demo.", "echo.demo"},
		{"a.echo.demo", "echo.demo"},
		{"b.a.echo.demo", "echo.demo"},
		{"x.echo.demo", "x.echo.demo"},
		{"y.x.echo.demo", "x.echo.demo"},
		{"xdemo", "-"}, // suffixes are whole labels
		{"demox", "-"},
		{"echo.demox", "-"},
		{"cho.demo", "demo"},
		{"other", "-"},
		{"example.com", "com"},
		{"com.example", "-"},
		{testKL + ".echo.demo", testKL + ".echo.demo"},
		{testKL2 + ".echo.demo", "echo.demo"},  // another key: only the name matches
		{testKL + ".a.echo.demo", "echo.demo"}, // keyed rules cover only themselves
		{testKL + ".demo", "demo"},
		{testKL, testKL},
		{testKL2, "-"},
	} {
		r, ok := tab.Lookup(MustParseServiceID(tc.id))
		if tc.rule == "-" {
			require.False(t, ok, "%s matched %q", tc.id, r.Service)
			require.Equal(t, Rule{}, r)
			continue
		}
		require.True(t, ok, tc.id)
		require.Equal(t, tc.rule, r.Service, tc.id)
	}

	r, _ := tab.Lookup(MustParseServiceID(testKL + ".echo.demo"))
	require.Equal(t, ActionEndpoints, r.Action)
	require.Equal(t, eps("192.0.2.2:2"), r.Endpoints)

	// A default route catches what nothing else does, and nothing more.
	require.NoError(t, tab.Set(Rule{Service: ".", Action: ActionDrop}))
	for id, want := range map[string]string{"xdemo": "", testKL2: "", "a.demo": "demo"} {
		r, ok := tab.Lookup(MustParseServiceID(id))
		require.True(t, ok, id)
		require.Equal(t, want, r.Service, id)
	}
	_, ok := tab.Lookup(ServiceID{})
	require.False(t, ok, "the zero ID matches nothing, not even the default")
}

func TestServiceTableSetInvalid(t *testing.T) {
	ep := eps("192.0.2.1:1")
	for _, tc := range []struct {
		name string
		r    Rule
		id   bool // the service is at fault
	}{
		{"bad service", Rule{Service: "a_b"}, true},
		{"empty label", Rule{Service: "a..b", Action: ActionDrop}, true},
		{"misplaced key", Rule{Service: "demo." + testKL}, true},
		{"endpoints without any", Rule{Service: "demo", Action: ActionEndpoints}, false},
		{"resolve with endpoints", Rule{Service: "demo", Endpoints: ep}, false},
		{"drop with endpoints", Rule{Service: "demo", Action: ActionDrop, Endpoints: ep}, false},
		{"unknown action", Rule{Service: "demo", Action: 7}, false},
		{"zero address", Rule{Service: "demo", Action: ActionEndpoints,
			Endpoints: append(eps("192.0.2.1:1"), resolve.Endpoint{})}, false},
		{"port 0", Rule{Service: "demo", Action: ActionEndpoints, Endpoints: eps("192.0.2.1:0")}, false},
		{"negative TTL", Rule{Service: "demo", Action: ActionEndpoints,
			Endpoints: []resolve.Endpoint{{Addr: ep[0].Addr, TTL: -time.Second}}}, false},
	} {
		var tab ServiceTable
		err := tab.Set(tc.r)
		require.ErrorIs(t, err, ErrInvalidRule, tc.name)
		if tc.id {
			require.ErrorIs(t, err, ErrInvalidServiceID, tc.name)
		} else {
			require.NotErrorIs(t, err, ErrInvalidServiceID, tc.name)
		}
		require.Empty(t, tab.Rules(), "%s: a refused rule must not be stored", tc.name)
	}
	// Unspecified addresses mean "this machine", so they are fine.
	var tab ServiceTable
	require.NoError(t, tab.Set(Rule{Service: "demo", Action: ActionEndpoints, Endpoints: eps("0.0.0.0:1", "[::]:2")}))
}

func TestServiceTableRulesReplaceDelete(t *testing.T) {
	var tab ServiceTable
	require.Empty(t, tab.Rules())
	_, ok := tab.Lookup(MustParseServiceID("demo"))
	require.False(t, ok)
	require.False(t, tab.Delete("demo"))

	in := eps("192.0.2.1:1", "192.0.2.2:2")
	require.NoError(t, tab.Set(Rule{Service: "Demo.", Action: ActionEndpoints, Endpoints: in}))
	require.NoError(t, tab.Set(Rule{Service: "", Action: ActionDrop}))
	require.NoError(t, tab.Set(Rule{Service: testKL + ".ECHO.demo"}))
	require.NoError(t, tab.Set(Rule{Service: "a.demo", Action: ActionDrop}))
	require.NoError(t, tab.Set(Rule{Service: "a.demo"})) // replaces
	in[0].Addr = netip.MustParseAddrPort("198.51.100.1:1")

	require.Equal(t, []Rule{
		{Service: ""},
		{Service: "a.demo"},
		{Service: "demo"},
		{Service: testKL + ".echo.demo"},
	}, withoutDetails(tab.Rules()))
	require.Equal(t, ActionDrop, tab.Rules()[0].Action)

	// Neither the caller's slice nor what the table hands out aliases the
	// table's own.
	r, _ := tab.Lookup(MustParseServiceID("demo"))
	require.Equal(t, eps("192.0.2.1:1", "192.0.2.2:2"), r.Endpoints)
	_ = append(r.Endpoints, resolve.Endpoint{})
	rules := tab.Rules()
	rules[2].Endpoints[1].Addr = netip.MustParseAddrPort("198.51.100.2:2")
	r, _ = tab.Lookup(MustParseServiceID("demo"))
	require.Equal(t, eps("192.0.2.1:1", "192.0.2.2:2"), r.Endpoints)

	require.False(t, tab.Delete("a_b"))
	require.False(t, tab.Delete(testKL2+".echo.demo"))
	require.True(t, tab.Delete("A.DEMO."))
	require.False(t, tab.Delete("a.demo"))
	require.True(t, tab.Delete(testKL+".echo.demo"))
	require.True(t, tab.Delete("."))
	require.Equal(t, []Rule{{Service: "demo"}}, withoutDetails(tab.Rules()))
}

// withoutDetails keeps only the Service of each rule.
func withoutDetails(rules []Rule) []Rule {
	out := make([]Rule, len(rules))
	for i, r := range rules {
		out[i] = Rule{Service: r.Service}
	}
	return out
}

func TestServiceTableActionString(t *testing.T) {
	require.Equal(t, "resolve", ActionResolve.String())
	require.Equal(t, "endpoints", ActionEndpoints.String())
	require.Equal(t, "drop", ActionDrop.String())
	require.Equal(t, "Action(9)", Action(9).String())
}

func TestServiceTableConcurrent(t *testing.T) {
	var tab ServiceTable
	ids := []ServiceID{
		MustParseServiceID("a.b.demo"), MustParseServiceID(testKL + ".b.demo"), MustParseServiceID("other"),
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				svc := []string{"demo", "b.demo", testKL + ".b.demo", ""}[(i+w)%4]
				if i%3 == 0 {
					tab.Delete(svc)
				} else if err := tab.Set(Rule{Service: svc, Action: ActionEndpoints,
					Endpoints: eps(fmt.Sprintf("192.0.2.%d:%d", w+1, i+1))}); err != nil {
					panic(err)
				}
			}
		})
		wg.Go(func() {
			for i := range 2000 {
				if r, ok := tab.Lookup(ids[i%len(ids)]); ok && len(r.Endpoints) != 1 {
					panic("torn rule")
				}
				if i%100 == 0 {
					tab.Rules()
				}
			}
		})
	}
	wg.Wait()
}

func TestServiceTableLookupAllocs(t *testing.T) {
	tab := benchTable()
	for _, s := range []string{"api.echo.demo", "a.b.c.unknown", testKL + ".echo.demo", testKL2 + ".x.echo.demo"} {
		id := MustParseServiceID(s)
		require.Zero(t, testing.AllocsPerRun(100, func() { tab.Lookup(id) }), s)
	}
}

// benchTable is a table of a plausible size: a default route, a few
// hundred name rules and some keyed ones.
func benchTable() *ServiceTable {
	tab := new(ServiceTable)
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(tab.Set(Rule{}))
	must(tab.Set(Rule{Service: "demo", Action: ActionDrop}))
	must(tab.Set(Rule{Service: "echo.demo", Action: ActionEndpoints, Endpoints: eps("192.0.2.1:443")}))
	must(tab.Set(Rule{Service: testKL + ".echo.demo", Action: ActionEndpoints, Endpoints: eps("192.0.2.2:443")}))
	for i := range 300 {
		must(tab.Set(Rule{Service: fmt.Sprintf("svc%d.zone%d", i, i%7)}))
	}
	return tab
}

func BenchmarkServiceTableLookup(b *testing.B) {
	tab := benchTable()
	for _, bc := range []struct{ name, id string }{
		{"suffix", "api.echo.demo"},      // a miss, then a hit
		{"exact", "echo.demo"},           // first probe hits
		{"default", "a.b.c.unknown"},     // four misses, then the default
		{"keyed", testKL + ".echo.demo"}, // the exact keyed rule
	} {
		id := MustParseServiceID(bc.id)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tab.Lookup(id)
			}
		})
	}
}
