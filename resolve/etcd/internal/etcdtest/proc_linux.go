package etcdtest

import (
	"os/exec"
	"syscall"
)

// setDeathSignal has the kernel kill the member if the test binary dies
// without running its cleanups (a panic, a timeout, SIGKILL), so that no
// etcd outlives its test.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
