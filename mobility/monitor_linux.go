package mobility

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// netlinkSource is a NETLINK_ROUTE socket subscribed to link and address
// events. Route events are left out on purpose: State holds no routes, so
// they could only cause re-reads that find nothing new.
//
// The socket belongs to the network namespace of the thread that opened
// it, whatever thread later reads it.
type netlinkSource struct {
	f  *os.File // non-blocking, so reads park in the runtime poller and Close wakes them
	rc syscall.RawConn
}

func newEventSource() (eventSource, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	sa := &unix.SockaddrNetlink{
		Family: unix.AF_NETLINK,
		Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR,
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	f := os.NewFile(uintptr(fd), "netlink-route")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &netlinkSource{f: f, rc: rc}, nil
}

func (s *netlinkSource) close() error { return s.f.Close() }

func (s *netlinkSource) run(trigger func()) error {
	// Kernel notifications are far smaller than this; a datagram that is
	// not would be truncated, which still triggers a re-read.
	buf := make([]byte, 32<<10)
	for {
		var (
			n    int
			from unix.Sockaddr
			rerr error
		)
		err := s.rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN // false: wait in the poller for more
		})
		switch {
		case errors.Is(err, os.ErrClosed):
			return nil
		case err != nil:
			return err
		case rerr == unix.ENOBUFS:
			// The socket overflowed and events were lost. The Monitor
			// re-reads everything on any trigger, so losing them is fine.
			trigger()
		case rerr == unix.EINTR:
		case rerr != nil:
			return os.NewSyscallError("recvfrom", rerr)
		case !fromKernel(from):
			// Only the kernel may send to these groups, but be sure.
		case wantEvent(buf[:n]):
			trigger()
		}
	}
}

func fromKernel(sa unix.Sockaddr) bool {
	nl, ok := sa.(*unix.SockaddrNetlink)
	return ok && nl.Pid == 0
}

// wantEvent reports whether a datagram of netlink messages should trigger
// a re-read. All do, except when every message is an RTM_NEWLINK carrying
// IFLA_WIRELESS: Wi-Fi drivers send those for scans and other events that
// change no address, often several a second. A malformed datagram
// triggers too: a needless re-read costs little, a missed one leaves a
// stale address.
func wantEvent(b []byte) bool {
	parsed := false
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return true
		}
		data := b[unix.SizeofNlMsghdr:l]
		if typ != unix.RTM_NEWLINK || len(data) < unix.SizeofIfInfomsg ||
			!hasAttr(data[unix.SizeofIfInfomsg:], unix.IFLA_WIRELESS) {
			return true
		}
		parsed = true
		b = b[min(nlAlign(l), len(b)):]
	}
	return !parsed || len(b) != 0 // a partial message: truncated, so unknown
}

// hasAttr reports whether the route attributes in b include one of type
// typ.
func hasAttr(b []byte, typ uint16) bool {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofRtAttr || l > len(b) {
			return false
		}
		if t == typ {
			return true
		}
		b = b[min(nlAlign(l), len(b)):]
	}
	return false
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// sysfsNet is where Linux describes network devices.
const sysfsNet = "/sys/class/net"

// osKind asks sysfs (under root, normally /sys/class/net) what name is:
// a wireless or phy80211 entry means Wi-Fi; DEVTYPE=wlan or wwan in uevent
// means Wi-Fi or cellular. It returns KindUnknown when sysfs does not say,
// which includes every interface of another network namespace (sysfs
// shows the namespace it was mounted in).
func osKind(root, name string) Kind {
	if !validName(name) {
		return KindUnknown
	}
	dir := filepath.Join(root, name)
	for _, e := range []string{"wireless", "phy80211"} {
		if _, err := os.Stat(filepath.Join(dir, e)); err == nil {
			return KindWiFi
		}
	}
	uevent, err := os.ReadFile(filepath.Join(dir, "uevent"))
	if err != nil {
		return KindUnknown
	}
	for line := range strings.Lines(string(uevent)) {
		switch strings.TrimSpace(line) {
		case "DEVTYPE=wlan":
			return KindWiFi
		case "DEVTYPE=wwan":
			return KindCellular
		}
	}
	return KindUnknown
}

// osVirtual reports whether sysfs places name under devices/virtual: a
// bridge, veth, tunnel or other software device.
func osVirtual(root, name string) bool {
	if !validName(name) {
		return false
	}
	target, err := filepath.EvalSymlinks(filepath.Join(root, name))
	return err == nil && strings.Contains(filepath.ToSlash(target), "/devices/virtual/")
}

// validName keeps interface names from the OS, or a hook, from escaping
// the sysfs directory.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}
