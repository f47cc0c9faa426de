// Package mobility keeps roam's connections alive while the machine's
// addresses change: it notices when a laptop moves from Wi-Fi to
// cellular, an address is deleted or a link goes down, and says whether
// sockets must move to a new local address.
//
// # Monitor
//
// A Monitor watches the interfaces and publishes a Change for every real
// difference:
//
//	m, err := mobility.NewMonitor(mobility.MonitorConfig{})
//	if err != nil { ... }
//	defer m.Close()
//	for c := range m.Subscribe(ctx) {
//		if c.PreferredChanged && c.Preferred.IsValid() {
//			host.Rebind(ctx, netip.AddrPortFrom(c.Preferred, 0).String())
//		}
//	}
//
// It works like Tailscale's netmon. OS events are only triggers: on Linux
// a netlink socket subscribed to link and address events; elsewhere, or
// with MonitorConfig.DisableNetlink, or after netlink fails at run time, a
// poll every MonitorConfig.PollInterval. After a trigger the Monitor waits
// MonitorConfig.Debounce (10 ms) so a burst of events costs one read,
// re-reads the whole interface State, compares it with the last one, and
// publishes nothing if they are equal. Otherwise the Change carries both
// States, the addresses Removed and Added, the Policy's Preferred address
// in the new State, and PreferredChanged: "rebind required". Poke forces
// a re-read at once.
//
// Each Subscribe channel holds one Change. A subscriber that falls behind
// gets the pending Change merged with the next, so it sees the net
// difference since the last Change it took; the Monitor never blocks on
// it. Subscribe first, then read State or Preferred, and nothing is
// missed.
//
// # Policy
//
// Policy.Choose picks the preferred local address of a State: among the
// addresses of interfaces that are up (not loopback, not link-local), the
// interface kind first in Policy.Prefer (default: wired, Wi-Fi, cellular,
// unknown, virtual), then global over private (RFC 1918, CGNAT, ULA), then
// IPv4 over IPv6 unless Policy.Family restricts the family, then a fixed
// order. The Monitor adds stickiness: while the current pick stays among
// the best, a new address that only ties with it does not replace it, so
// no needless rebind happens.
//
// Kinds come from the operating system where it says (Linux sysfs: the
// wireless directory, DEVTYPE, devices/virtual), else from the interface
// name (ClassifyName documents the rules); Policy.Classify overrides them.
//
// # Testing
//
// MonitorConfig.ReadState replaces the OS: a test returns the States it
// wants, calls Poke or lets the poll run, and reads the Changes, under
// testing/synctest if it likes, as this package's own tests do.
// ReadOSState is the default reader, for wrapping.
package mobility
