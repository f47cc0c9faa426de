package mobility

import (
	"strconv"
	"strings"
)

// Kind is what sort of link an interface is. The policy ranks addresses by
// it, so a laptop prefers its cable to its wifi and its wifi to a phone's
// tethered cellular link.
type Kind uint8

// The kinds of link. KindUnknown is the zero value: detection found no
// rule that applies.
const (
	KindUnknown  Kind = iota
	KindLoopback      // lo, lo0: never chosen by a Policy
	KindWired         // Ethernet
	KindWiFi          // 802.11
	KindCellular      // a modem, or a phone tethered over USB
	KindVirtual       // bridges, tunnels, VPNs, container links
)

var kindNames = [...]string{
	KindUnknown:  "unknown",
	KindLoopback: "loopback",
	KindWired:    "wired",
	KindWiFi:     "wifi",
	KindCellular: "cellular",
	KindVirtual:  "virtual",
}

// String returns the kind's lower-case name, such as "wifi", or "Kind(9)"
// for a value that is not one of the constants.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// namePrefixes map interface-name prefixes to kinds. The lists cover the
// names Linux (traditional and systemd "predictable" names), Android,
// macOS/iOS and Windows' friendly names give their links. The first
// matching prefix wins, so virtual names come first: Windows' Hyper-V
// "vEthernet (WSL)" must not become wired through a later rule.
var namePrefixes = []struct {
	prefix string
	kind   Kind
}{
	// Virtual: bridges, tunnels, VPNs, containers, hypervisors.
	{"veth", KindVirtual},
	{"docker", KindVirtual},
	{"br-", KindVirtual},
	{"virbr", KindVirtual},
	{"vmnet", KindVirtual},
	{"vboxnet", KindVirtual},
	{"tailscale", KindVirtual},
	{"wg", KindVirtual},
	{"tun", KindVirtual},
	{"tap", KindVirtual},
	{"utun", KindVirtual},
	{"ipsec", KindVirtual},
	{"zt", KindVirtual},
	{"dummy", KindVirtual},
	{"vxlan", KindVirtual},
	{"flannel", KindVirtual},
	{"cali", KindVirtual},
	{"cni", KindVirtual},
	{"kube", KindVirtual},
	{"lxc", KindVirtual},
	{"lxd", KindVirtual},
	{"awdl", KindVirtual}, // Apple Wireless Direct Link: peer-to-peer, not internet
	{"llw", KindVirtual},  // its low-latency companion
	{"bridge", KindVirtual},
	{"gif", KindVirtual},
	{"stf", KindVirtual},
	{"anpi", KindVirtual},
	{"ap", KindVirtual}, // macOS/iOS access-point (hotspot) side

	// Cellular: modems, Android radio interfaces, iOS, USB tethering.
	{"wwan", KindCellular},
	{"wwp", KindCellular}, // systemd names for WWAN: wwp0s20f0u6
	{"rmnet", KindCellular},
	{"ccmni", KindCellular},
	{"pdp_ip", KindCellular},
	{"usb", KindCellular}, // RNDIS/NCM tethering to a phone
	{"ppp", KindCellular}, // PPP is almost always a modem today
	{"cellular", KindCellular},
	{"mobile", KindCellular},

	// Wi-Fi.
	{"wl", KindWiFi}, // wlan0, wlp2s0, wlx<mac>
	{"wifi", KindWiFi},
	{"wi-fi", KindWiFi},
	{"wireless", KindWiFi},
	{"ath", KindWiFi},

	// Wired. "en" covers enp3s0/eno1/ens33/enx<mac> on Linux; on macOS en0
	// may be Wi-Fi, which names cannot tell (see ClassifyName).
	{"eth", KindWired},
	{"en", KindWired},
	{"em", KindWired},
	{"ethernet", KindWired},
}

// ClassifyName guesses an interface's kind from its name alone. It is the
// last step of the built-in detection, after the operating system's own
// answers (on Linux: /sys/class/net/<name>/wireless or phy80211 means
// Wi-Fi; DEVTYPE=wlan or wwan in its uevent means Wi-Fi or cellular; a
// device under /sys/devices/virtual that no name rule matched is virtual).
//
// The rules, compared case-insensitively by prefix, first match wins:
//
//   - "lo" exactly, or "lo0": loopback
//   - veth, docker, br-, virbr, vmnet, vboxnet, tailscale, wg, tun, tap,
//     utun, ipsec, zt, dummy, vxlan, flannel, cali, cni, kube, lxc, lxd,
//     awdl, llw, bridge, gif, stf, anpi, ap: virtual
//   - wwan, wwp, rmnet, ccmni, pdp_ip, usb, ppp, cellular, mobile: cellular
//   - wl, wifi, wi-fi, wireless, ath: Wi-Fi
//   - eth, en, em, ethernet: wired
//   - anything else: unknown
//
// Names cannot tell everything (macOS's en0 is often Wi-Fi); set
// Policy.Classify where it matters.
func ClassifyName(name string) Kind {
	n := strings.ToLower(name)
	if n == "lo" || n == "lo0" {
		return KindLoopback
	}
	for _, r := range namePrefixes {
		if strings.HasPrefix(n, r.prefix) {
			return r.kind
		}
	}
	return KindUnknown
}
