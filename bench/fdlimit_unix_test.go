//go:build unix

package main

import "syscall"

// raiseFileLimit lifts the process's open-file limit to at least n if it
// can (root may raise the hard limit too), and reports whether n fit.
func raiseFileLimit(n uint64) bool {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return false
	}
	if lim.Cur >= n {
		return true
	}
	want := syscall.Rlimit{Cur: n, Max: max(n, lim.Max)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
		return true
	}
	if lim.Max >= n {
		lim.Cur = n
		return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) == nil
	}
	return false
}
