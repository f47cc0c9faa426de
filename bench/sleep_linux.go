package main

import (
	"syscall"
	"time"
)

// sleepUntil sleeps until t as precisely as the emu relay times its
// datagrams: Go's timers may wake a millisecond late, so it sleeps on a
// timer until 2 ms before t and the rest in nanosleep, which blocks its
// thread without spinning.
func sleepUntil(t time.Time) {
	if d := time.Until(t) - 2*time.Millisecond; d > 0 {
		time.Sleep(d)
	}
	if d := time.Until(t); d > 0 {
		ts := syscall.NsecToTimespec(int64(d))
		for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
		}
	}
}
