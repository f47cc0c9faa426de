package emu

import (
	"syscall"
	"time"
)

// fineSleep sleeps for d with the kernel's precision (tens of
// microseconds), where time.Sleep rounds up to the next millisecond. It
// blocks its thread in the system call, so it spins no CPU; the runtime
// gives the thread's P to other goroutines meanwhile.
func fineSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}
