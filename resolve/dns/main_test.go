package dns_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: the
// Resolver's refreshes and watches must all end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
