package sal

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestConnSize holds a flow's Conn within the 768-byte size class of Go's
// allocator: a server holds one per flow, thousands of them, and the next
// class is 896 bytes. Order fields by size before adding one that breaks
// this (see the Conn type).
func TestConnSize(t *testing.T) {
	require.LessOrEqual(t, unsafe.Sizeof(Conn{}), uintptr(768))
}
