package resolvetest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/resolvetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun checks the suite against the reference backend; package resolve
// runs it against every backend.
func TestRun(t *testing.T) {
	resolvetest.Run(t, func(t *testing.T) resolve.Resolver {
		m := resolve.NewMemory()
		t.Cleanup(func() { _ = m.Close() })
		return m
	})
}
