//go:build !linux

package main

import "time"

// sleepUntil sleeps until t, on Go's timers, which may wake late.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }
