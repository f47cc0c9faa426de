package etcd_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: leases,
// keep-alives and watches must all end with their Backend. The etcd
// client's own gRPC machinery ends with its Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
