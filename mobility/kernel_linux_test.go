package mobility

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// inNetns runs f on a fresh OS thread that has joined the network
// namespace at nsPath, and waits for it. The thread is never unlocked, so
// the runtime destroys it when f returns: no goroutine can ever run on a
// thread left in the wrong namespace.
func inNetns(nsPath string, f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", nsPath, err)
			return
		}
		f()
		errc <- nil
	}()
	return <-errc
}

// TestKernelNetlink drives a Monitor with real netlink events: it creates
// a private network namespace with a veth pair, starts a Monitor inside
// it, changes the pair with ip(8), and measures how soon the Changes come.
// No packet is sent: IPv6 is off in the namespace, and IPv4 sends nothing
// unprompted.
func TestKernelNetlink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping the real-kernel test: creating a network namespace needs root")
	}
	ipCmd, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("skipping the real-kernel test: iproute2's ip is not installed")
	}
	ns := fmt.Sprintf("roamt-mon-%08x", rand.Uint32())
	ip := func(args ...string) error {
		out, err := exec.Command(ipCmd, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := ip("netns", "add", ns); err != nil {
		t.Skipf("skipping the real-kernel test: cannot create a namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := ip("netns", "del", ns); err != nil {
			t.Error(err)
		}
		out, err := exec.Command(ipCmd, "netns", "list").CombinedOutput()
		require.NoError(t, err)
		require.NotContains(t, string(out), ns, "namespace left behind")
	})
	// Best effort: without sysctl the test still works, with IPv6 chatter
	// kept inside the namespace.
	_ = exec.Command(ipCmd, "netns", "exec", ns, "sysctl", "-qw",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1").Run()
	for _, args := range [][]string{
		{"-n", ns, "link", "add", "rt0a", "type", "veth", "peer", "name", "rt0b"},
		{"-n", ns, "addr", "add", "10.199.77.1/24", "dev", "rt0a"},
		{"-n", ns, "addr", "add", "10.199.77.2/24", "dev", "rt0b"},
		{"-n", ns, "link", "set", "rt0a", "up"},
		{"-n", ns, "link", "set", "rt0b", "up"},
	} {
		require.NoError(t, ip(args...))
	}

	nsPath := "/run/netns/" + ns
	read := func() (s State, err error) {
		if nerr := inNetns(nsPath, func() { s, err = ReadOSState() }); nerr != nil {
			return State{}, nerr
		}
		return s, err
	}
	a1, a2 := netip.MustParseAddr("10.199.77.1"), netip.MustParseAddr("10.199.77.2")
	// The pair's carrier comes up asynchronously; wait until both ends are
	// running before watching.
	require.Eventually(t, func() bool {
		s, err := read()
		return err == nil && slices.Contains(s.Addrs(), a1) && slices.Contains(s.Addrs(), a2)
	}, 5*time.Second, 10*time.Millisecond, "veth pair never came up")

	var m *Monitor
	require.NoError(t, inNetns(nsPath, func() {
		// The netlink socket is created here, so it hears this namespace.
		m, err = NewMonitor(MonitorConfig{ReadState: read})
	}))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	require.NotNil(t, m.src, "the Monitor fell back to polling")
	require.ElementsMatch(t, []netip.Addr{a1, a2}, m.State().Addrs())
	changes := m.Subscribe(t.Context())

	// await runs ip, then waits for a Change that satisfies ok, and logs
	// the latency from the command's start and end.
	await := func(what string, ok func(Change) bool, args ...string) Change {
		t.Helper()
		start := time.Now()
		require.NoError(t, ip(args...))
		ran := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		for {
			select {
			case c := <-changes:
				if ok(c) {
					got := time.Now()
					t.Logf("%s: Change %v after ip started, %v after it exited (debounce %v included)",
						what, got.Sub(start).Round(time.Microsecond), got.Sub(ran).Round(time.Microsecond), m.debounce)
					return c
				}
			case <-ctx.Done():
				t.Fatalf("%s: no Change within 2s; state now %+v", what, m.State())
			}
		}
	}

	// Deleting an address: the event alone must bring the Change; the
	// Monitor is not polling.
	c := await("addr del", func(c Change) bool { return slices.Contains(c.Removed, a1) },
		"-n", ns, "addr", "del", "10.199.77.1/24", "dev", "rt0a")
	require.Equal(t, []netip.Addr{a1}, c.Removed)

	// Taking a link down: its peer loses carrier, so every address goes
	// and nothing is left to prefer.
	await("link down", func(c Change) bool { return len(c.New.Addrs()) == 0 },
		"-n", ns, "link", "set", "rt0a", "down")
	require.False(t, m.Preferred().IsValid())
	require.Empty(t, m.State().Addrs())

	// And up again: the carrier returns, and with it an address to use.
	c = await("link up", func(c Change) bool { return slices.Contains(c.New.Addrs(), a2) },
		"-n", ns, "link", "set", "rt0a", "up")
	require.True(t, c.PreferredChanged)
	require.Equal(t, a2, c.Preferred)
	require.Equal(t, a2, m.Preferred())
}
