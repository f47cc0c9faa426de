package main

import (
	"os"
	"strings"
)

// mptcpUnsupported says why MPTCP cannot run here, or "".
func mptcpUnsupported(*scenario) string {
	if why := kernelAvailable(); why != "" {
		return why
	}
	b, err := os.ReadFile("/proc/sys/net/mptcp/enabled")
	if err != nil {
		return "the kernel has no MPTCP (/proc/sys/net/mptcp/enabled missing)"
	}
	if strings.TrimSpace(string(b)) != "1" {
		return "MPTCP is disabled (net.mptcp.enabled=0)"
	}
	return ""
}
