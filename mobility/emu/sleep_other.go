//go:build !linux

package emu

import "time"

// fineSleep is time.Sleep where no finer sleep is wired up.
func fineSleep(d time.Duration) { time.Sleep(d) }
