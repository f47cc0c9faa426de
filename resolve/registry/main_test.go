package registry_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: a Server's
// connections, watch pushers and lease timers, and a Client's sessions,
// must all end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
