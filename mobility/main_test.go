package mobility

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind: a Monitor's
// watch and loop goroutines, and its subscriptions' context callbacks,
// must all end with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
