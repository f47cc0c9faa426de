// Package saltest tests resolver backends under real sal Hosts: RunHosts
// dials and serves through a backend end to end, and BenchBackends
// measures backends side by side. resolve/resolvetest tests a backend
// alone; this package holds what needs sal, so that nothing under resolve
// imports sal.
package saltest

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

var serial atomic.Uint64

// name returns a service ID that no other subtest uses, so that a backend
// shared between subtests (a remote registry) cannot confuse them.
func name(t *testing.T) string {
	return fmt.Sprintf("st-%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), serial.Add(1))
}
