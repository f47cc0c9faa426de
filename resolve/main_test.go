package resolve_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: the Cache's
// watches and lookups, and Memory's watch callbacks, must all end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
