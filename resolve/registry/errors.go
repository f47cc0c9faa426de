package registry

import "github.com/roamnet/roam/resolve"

// Errors of this package; the others a registry gives are resolve's (see
// the package documentation). Each may be wrapped; test with errors.Is.
var (
	// ErrKeyMismatch means the registry proved a key other than the
	// pinned one (ClientConfig.Key, or key= in a registry:// URL). It is
	// resolve.ErrRegistryKey, under this package's name.
	ErrKeyMismatch = resolve.ErrRegistryKey
)
