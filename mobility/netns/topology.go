package netns

import (
	"errors"
	"net/netip"
	"testing"
)

// The addresses of a Topology. They exist only inside its namespaces, so
// every test can use the same ones.
var (
	// ServerAddr is the server's address, on its loopback: reachable over
	// either link, as a service on the Internet is.
	ServerAddr = netip.MustParseAddr("10.199.0.1")

	ServerWifi = netip.MustParsePrefix("10.199.1.1/24") // the server's end of the wifi link
	ClientWifi = netip.MustParsePrefix("10.199.1.2/24") // the client's wifi address
	ServerCell = netip.MustParsePrefix("10.199.2.1/24") // the server's end of the cell link
	ClientCell = netip.MustParsePrefix("10.199.2.2/24") // the client's cell address
)

// Routing tables of the client's source routing.
const (
	wifiTable = 101
	cellTable = 102
)

// Topology is a client with two interfaces, "wifi" and "cell", each a
// veth link to a server:
//
//	client ns                          server ns
//	wifi 10.199.1.2/24 ──────────── wifi 10.199.1.1/24
//	cell 10.199.2.2/24 ──────────── cell 10.199.2.1/24
//	                                 lo   10.199.0.1/32 (ServerAddr)
//
// The client reaches ServerAddr over wifi (metric 10), else over cell
// (metric 20), as a phone prefers wifi. A socket bound to an address of
// one link's subnet leaves over that link or not at all (source routing),
// so a client can use both paths at once. Take a link down with
// Client.SetDown("wifi"): the kernel drops its routes, and the client's
// next datagram leaves over cell, from the cell address.
type Topology struct {
	Client, Server *Namespace
}

// NewTopology builds the topology. On error it removes whatever it built.
func NewTopology() (_ *Topology, err error) {
	t := &Topology{}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
		}
	}()
	if t.Client, err = NewNamespace("-c"); err != nil {
		return nil, err
	}
	if t.Server, err = NewNamespace("-s"); err != nil {
		return nil, err
	}
	c, s := t.Client, t.Server
	steps := []func() error{
		func() error { return Veth(c, "wifi", s, "wifi") },
		func() error { return Veth(c, "cell", s, "cell") },
		func() error { return c.AddAddr("wifi", ClientWifi) },
		func() error { return c.AddAddr("cell", ClientCell) },
		func() error { return s.AddAddr("wifi", ServerWifi) },
		func() error { return s.AddAddr("cell", ServerCell) },
		func() error { return s.AddAddr("lo", netip.PrefixFrom(ServerAddr, 32)) },
		func() error { return t.RouteWifi() },
		func() error { return t.RouteCell() },
		// Replies to a client address go back over its own link, and
		// the server accepts datagrams from either address on either link.
		func() error { return s.Sysctl("net/ipv4/conf/all/rp_filter", "0") },
		func() error { return c.Sysctl("net/ipv4/conf/all/rp_filter", "0") },
		// Source routing: what is bound to a link's address leaves over
		// that link or not at all, as on a phone whose radio is off.
		func() error { return c.IP("rule", "add", "from", ClientWifi.Masked().String(), "table", "101") },
		func() error { return c.IP("rule", "add", "from", ClientCell.Masked().String(), "table", "102") },
		func() error { return c.IP("route", "add", "unreachable", "default", "metric", "1000", "table", "101") },
		func() error { return c.IP("route", "add", "unreachable", "default", "metric", "1000", "table", "102") },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// RouteWifi adds the client's routes to ServerAddr over wifi, as after
// Client.SetUp("wifi"), which does not bring them back.
func (t *Topology) RouteWifi() error {
	return t.route("wifi", ServerWifi.Addr(), 10, wifiTable)
}

// RouteCell adds the client's routes to ServerAddr over cell.
func (t *Topology) RouteCell() error {
	return t.route("cell", ServerCell.Addr(), 20, cellTable)
}

func (t *Topology) route(dev string, via netip.Addr, metric, table int) error {
	dst := netip.PrefixFrom(ServerAddr, 32)
	if err := t.Client.Route(dst, via, dev, metric, 0); err != nil {
		return err
	}
	return t.Client.Route(dst, via, dev, metric, table)
}

// Link is one of the client's two links to the server's one address.
type Link struct {
	Dev    string       // the interface's name, the same at both ends
	Client netip.Prefix // the client's address on it
	Server netip.Prefix // the server's end, the client's gateway
	// Table is the client's routing table for what is sent from
	// Client's subnet (ip rule from <subnet> table <Table>): a socket
	// bound to Client's address leaves over this link or not at all.
	Table int
}

// Links returns the client's links to ServerAddr: wifi, then cell. A
// client with a socket bound to each Client address has two independent
// paths to the server, as a multipath Host needs.
func (t *Topology) Links() []Link {
	return []Link{
		{Dev: "wifi", Client: ClientWifi, Server: ServerWifi, Table: wifiTable},
		{Dev: "cell", Client: ClientCell, Server: ServerCell, Table: cellTable},
	}
}

// Cut makes the link dev lose everything, both ways, until Restore, as a
// radio does in a handover or a tunnel: it takes the server's end down,
// so the client keeps its address and routes (its end only loses its
// carrier) and learns of the outage from silence alone, while the other
// link carries on. Client.SetDown is the other kind of failure, one the
// client's kernel sees.
func (t *Topology) Cut(dev string) error { return t.Server.SetDown(dev) }

// Restore ends a Cut. The server's kernel brings back the route to the
// link's subnet with the interface.
func (t *Topology) Restore(dev string) error { return t.Server.SetUp(dev) }

// Close deletes both namespaces, and with them every link. Closing twice
// is harmless.
func (t *Topology) Close() error {
	var errs []error
	for _, ns := range []*Namespace{t.Client, t.Server} {
		if ns != nil {
			errs = append(errs, ns.Close())
		}
	}
	return errors.Join(errs...)
}

// New builds a Topology for a test and deletes it when the test ends,
// however it ends: passing, failing or panicking. It skips the test, with
// the reason, where namespaces cannot be made (not root, not Linux, no
// iproute2).
func New(tb testing.TB) *Topology {
	tb.Helper()
	if err := Available(); err != nil {
		tb.Skipf("skipping: %v", err)
	}
	t, err := NewTopology()
	if err != nil {
		tb.Fatalf("netns: %v", err)
	}
	tb.Cleanup(func() {
		if err := t.Close(); err != nil {
			tb.Errorf("netns: cleaning up: %v", err)
		}
	})
	return t
}
