package dns

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/roamnet/roam/resolve"
)

// resolvConfPath is where New finds the system's nameservers.
const resolvConfPath = "/etc/resolv.conf"

// readResolvConf reads the nameservers of a resolv.conf(5) file. The error
// names the file and what to do instead.
func readResolvConf(path string) ([]netip.AddrPort, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("resolve: dns: cannot read the system resolver configuration (set dns.Config.Servers instead): %w", err)
	}
	servers, err := parseResolvConf(string(b))
	if err != nil {
		return nil, fmt.Errorf("resolve: dns: %s: %w", path, err)
	}
	return servers, nil
}

// parseResolvConf returns the addresses of the "nameserver" lines of a
// resolv.conf(5) text, in order, on port 53. As in the C library, lines
// starting with '#' or ';' are comments, other keywords (search, options)
// are ignored, and so is a nameserver line whose address does not parse
// (but such lines are named in the error if no server is left). An IPv6
// address may carry a zone ("fe80::1%eth0").
func parseResolvConf(text string) ([]netip.AddrPort, error) {
	var servers []netip.AddrPort
	var bad []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "nameserver" { // comments too: "#..." or ";..."
			continue
		}
		if len(f) < 2 {
			bad = append(bad, sc.Text())
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			bad = append(bad, sc.Text())
			continue
		}
		servers = append(servers, netip.AddrPortFrom(a.Unmap(), 53))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(servers) == 0 {
		if len(bad) > 0 {
			return nil, fmt.Errorf("no usable nameserver line (could not parse %q)", bad)
		}
		return nil, errors.New("no nameserver line")
	}
	return servers, nil
}

// parseServers parses Config.Servers: "ip:port", "[ipv6]:port", or a
// bare IP, which means port 53.
func parseServers(list []string) ([]netip.AddrPort, error) {
	servers := make([]netip.AddrPort, 0, len(list))
	for _, s := range list {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%w: dns server %q: want ip:port, [ipv6]:port or ip", resolve.ErrInvalid, s)
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		if ap.Port() == 0 {
			return nil, fmt.Errorf("%w: dns server %q: port 0", resolve.ErrInvalid, s)
		}
		servers = append(servers, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return servers, nil
}
