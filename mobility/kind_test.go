package mobility

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{
		KindUnknown: "unknown", KindLoopback: "loopback", KindWired: "wired",
		KindWiFi: "wifi", KindCellular: "cellular", KindVirtual: "virtual",
		Kind(6): "Kind(6)", Kind(255): "Kind(255)",
	} {
		require.Equal(t, want, k.String())
	}
}

func TestClassifyName(t *testing.T) {
	for name, want := range map[string]Kind{
		"lo": KindLoopback, "lo0": KindLoopback, "LO": KindLoopback,
		"eth0": KindWired, "enp3s0": KindWired, "eno1": KindWired, "ens33": KindWired,
		"enx001122334455": KindWired, "em1": KindWired, "Ethernet 2": KindWired, "eth0.100": KindWired,
		"wlan0": KindWiFi, "wlp2s0": KindWiFi, "wlx00c0ca": KindWiFi, "Wi-Fi": KindWiFi, "ath0": KindWiFi,
		"wwan0": KindCellular, "wwp0s20f0u6": KindCellular, "rmnet_data0": KindCellular,
		"ccmni0": KindCellular, "pdp_ip0": KindCellular, "usb0": KindCellular, "ppp0": KindCellular,
		"Cellular": KindCellular,
		"veth1a2b": KindVirtual, "docker0": KindVirtual, "br-9f8e": KindVirtual, "virbr0": KindVirtual,
		"tailscale0": KindVirtual, "wg0": KindVirtual, "tun0": KindVirtual, "utun3": KindVirtual,
		"vEthernet (WSL)": KindVirtual, "awdl0": KindVirtual, "dummy0": KindVirtual, "cali12": KindVirtual,
		"": KindUnknown, "foo0": KindUnknown, "l": KindUnknown, "loop1": KindUnknown, "ifb0": KindUnknown,
	} {
		require.Equal(t, want, ClassifyName(name), "name %q", name)
	}
}

// TestDetectKindSysfs runs the Linux sysfs probes against a fake sysfs
// tree.
func TestDetectKindSysfs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sysfs is Linux only")
	}
	root := t.TempDir()
	classNet := filepath.Join(root, "class", "net")
	mk := func(dev string, files map[string]string) {
		dir := filepath.Join(root, dev)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for f, content := range files {
			require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644))
		}
		require.NoError(t, os.MkdirAll(classNet, 0o755))
		require.NoError(t, os.Symlink(dir, filepath.Join(classNet, filepath.Base(dev))))
	}
	mk("devices/pci0/net/wlp0", map[string]string{"wireless/x": "", "uevent": "INTERFACE=wlp0\n"})
	mk("devices/pci0/net/radio", map[string]string{"phy80211/x": ""})
	mk("devices/usb/net/modem", map[string]string{"uevent": "DEVTYPE=wwan\nINTERFACE=modem\n"})
	mk("devices/usb/net/stick", map[string]string{"uevent": "DEVTYPE=wlan\n"})
	mk("devices/pci0/net/card", map[string]string{"uevent": "INTERFACE=card\n"})
	mk("devices/virtual/net/sw0", map[string]string{"uevent": "DEVTYPE=bridge\n"})

	for name, want := range map[string]Kind{
		"wlp0": KindWiFi, "radio": KindWiFi, "modem": KindCellular, "stick": KindWiFi,
		"card": KindUnknown, "sw0": KindUnknown, "missing": KindUnknown,
		"": KindUnknown, "..": KindUnknown, "../class": KindUnknown,
	} {
		require.Equal(t, want, osKind(classNet, name), "osKind(%q)", name)
	}
	for name, want := range map[string]bool{
		"sw0": true, "card": false, "wlp0": false, "missing": false, "..": false, "a/b": false,
	} {
		require.Equal(t, want, osVirtual(classNet, name), "osVirtual(%q)", name)
	}
}

func TestDetectKind(t *testing.T) {
	require.Equal(t, KindLoopback, detectKind("anything", net.FlagLoopback|net.FlagUp))
	require.Equal(t, KindCellular, detectKind("rmnet_data7", net.FlagUp))
	require.Equal(t, KindUnknown, detectKind("roamt-no-such-if", net.FlagUp))
}
