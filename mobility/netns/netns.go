package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Prefix starts the name of every namespace this package makes, so that
// a look at `ip netns list` tells whose they are.
const Prefix = "roamt-"

// ErrUnavailable is wrapped by the errors of Available: namespaces
// cannot be made here.
var ErrUnavailable = errors.New("netns: network namespaces are unavailable")

// Available reports whether namespaces can be made here: the process is
// root and iproute2's ip command is installed. It does not try to make one.
func Available() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("%w: only Linux has them", ErrUnavailable)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (running as uid %d)", ErrUnavailable, os.Geteuid())
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: the %s command (iproute2) is missing", ErrUnavailable, tool)
		}
	}
	return nil
}

// Namespace is a network namespace made by NewNamespace. Its methods run
// iproute2's ip and tc inside it.
type Namespace struct {
	Name string
}

// NewNamespace makes a namespace named Prefix+suffix+random, with its
// loopback up. Close deletes it.
func NewNamespace(suffix string) (*Namespace, error) {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	ns := &Namespace{Name: Prefix + hex.EncodeToString(rnd[:]) + suffix}
	if err := run("ip", "netns", "add", ns.Name); err != nil {
		return nil, err
	}
	if err := ns.SetUp("lo"); err != nil {
		ns.Close()
		return nil, err
	}
	return ns, nil
}

// Close deletes the namespace, and with it its interfaces and the veth
// peers of those. Sockets opened inside it keep it alive, invisibly, until
// they are closed. Closing twice is harmless.
func (ns *Namespace) Close() error {
	if _, err := os.Stat(filepath.Join("/var/run/netns", ns.Name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return run("ip", "netns", "del", ns.Name)
}

// Veth connects two namespaces with a veth pair: aDev in a and bDev in b,
// both up. The pair is made inside the namespaces, so that it never
// appears, even briefly, in the caller's.
func Veth(a *Namespace, aDev string, b *Namespace, bDev string) error {
	if err := run("ip", "link", "add", aDev, "netns", a.Name, "type", "veth",
		"peer", "name", bDev, "netns", b.Name); err != nil {
		return err
	}
	if err := a.SetUp(aDev); err != nil {
		return err
	}
	return b.SetUp(bDev)
}

// IP runs `ip args...` inside the namespace, for what the helpers below do
// not cover.
func (ns *Namespace) IP(args ...string) error {
	return run("ip", append([]string{"-n", ns.Name}, args...)...)
}

// AddAddr adds an address, such as 10.199.1.2/24, to an interface.
func (ns *Namespace) AddAddr(dev string, addr netip.Prefix) error {
	return ns.IP("addr", "add", addr.String(), "dev", dev)
}

// DelAddr removes an address from an interface.
func (ns *Namespace) DelAddr(dev string, addr netip.Prefix) error {
	return ns.IP("addr", "del", addr.String(), "dev", dev)
}

// SetUp takes an interface up.
func (ns *Namespace) SetUp(dev string) error { return ns.IP("link", "set", dev, "up") }

// SetDown takes an interface down. The kernel then removes the routes
// through it; SetUp does not bring them back.
func (ns *Namespace) SetDown(dev string) error { return ns.IP("link", "set", dev, "down") }

// Route adds a route to dst through the gateway via on dev, with a metric
// (lower wins), in the given routing table (0 for main).
func (ns *Namespace) Route(dst netip.Prefix, via netip.Addr, dev string, metric, table int) error {
	args := []string{"route", "add", dst.String()}
	if via.IsValid() {
		args = append(args, "via", via.String())
	}
	args = append(args, "dev", dev, "metric", strconv.Itoa(metric))
	if table != 0 {
		args = append(args, "table", strconv.Itoa(table))
	}
	return ns.IP(args...)
}

// Shaping configures tc's token bucket filter.
type Shaping struct {
	// Rate in bit/s. Required.
	Rate int64
	// Burst is the bucket's size in bytes. If zero, 10 ms at Rate, and at
	// least 16 KiB.
	Burst int
	// Latency bounds the time a packet may wait in the queue; packets that
	// would wait longer are dropped. If zero, 50 ms.
	Latency time.Duration
}

// Shape limits what dev sends with tc's tbf; it replaces any earlier shaping.
func (ns *Namespace) Shape(dev string, s Shaping) error {
	if s.Rate <= 0 {
		return errors.New("netns: Shaping.Rate must be positive")
	}
	if s.Burst == 0 {
		s.Burst = max(16<<10, int(s.Rate/8/100))
	}
	if s.Latency == 0 {
		s.Latency = 50 * time.Millisecond
	}
	return run("tc", "-n", ns.Name, "qdisc", "replace", "dev", dev, "root", "tbf",
		"rate", strconv.FormatInt(s.Rate, 10)+"bit",
		"burst", strconv.Itoa(s.Burst),
		"latency", strconv.FormatInt(s.Latency.Microseconds(), 10)+"us")
}

// Unshape removes dev's shaping.
func (ns *Namespace) Unshape(dev string) error {
	return run("tc", "-n", ns.Name, "qdisc", "del", "dev", dev, "root")
}

// Sysctl sets a network sysctl inside the namespace, such as
// "net/ipv4/conf/all/rp_filter".
func (ns *Namespace) Sysctl(key, value string) error {
	return ns.Do(func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
	})
}

// Command returns a command that runs inside the namespace (through `ip
// netns exec`), for tests that cross processes.
func (ns *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// ListenUDP opens a UDP socket inside the namespace.
func (ns *Namespace) ListenUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	return c, err
}

// List returns the names of the namespaces that exist now and start with
// Prefix.
func List() ([]string, error) {
	out, err := output("ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], Prefix) {
			names = append(names, f[0])
		}
	}
	return names, nil
}

func run(name string, args ...string) error {
	_, err := output(name, args...)
	return err
}

func output(name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("netns: %s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
