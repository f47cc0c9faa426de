//go:build !linux

package etcdtest

import "os/exec"

// setDeathSignal does nothing here: only Linux can tie a child's life to
// its parent's. Cleanups still kill every member when tests end normally.
func setDeathSignal(*exec.Cmd) {}
