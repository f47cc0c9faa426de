//go:build !linux

package main

import (
	"errors"
	"os"
	"syscall"
)

// openTUN fails: TUN devices are made only on Linux here.
func openTUN(string) (*os.File, error) { return nil, errors.New("TUN devices need Linux") }

// setCongestion does nothing here.
func setCongestion(string) func(network, address string, c syscall.RawConn) error { return nil }
