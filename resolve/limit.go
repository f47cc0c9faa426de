package resolve

import "fmt"

// Limit names one of the bounds a registry keeps; registry.Config
// (package github.com/roamnet/roam/resolve/registry) has a field for each.
// A client reads LimitHandshakes when the registry refused its QUIC
// handshake itself (CONNECTION_REFUSED, which carries no reason):
// MaxHandshakes were in progress, or its address, proven by a Retry, held
// MaxConnsPerAddr connections already.
//
// Limit and LimitError live here, beside ErrLimit, rather than in package
// registry, so that code that only matches errors (errors.Is, errors.As)
// needs no import of the registry.
type Limit string

// The registry's limits, each named for its registry.Config field.
const (
	LimitConns          Limit = "connections"             // registry.Config.MaxConns
	LimitConnsPerAddr   Limit = "connections per address" // registry.Config.MaxConnsPerAddr
	LimitHandshakes     Limit = "handshakes"              // the handshake refused: registry.Config.MaxHandshakes, or MaxConnsPerAddr
	LimitLeases         Limit = "leases"                  // registry.Config.MaxLeases
	LimitLeasesPerKey   Limit = "leases per key"          // registry.Config.MaxLeasesPerKey
	LimitLeasesPerConn  Limit = "leases per connection"   // registry.Config.MaxLeasesPerConn
	LimitEndpoints      Limit = "endpoints per service"   // registry.Config.MaxEndpoints
	LimitWatches        Limit = "watches"                 // registry.Config.MaxWatches
	LimitWatchesPerConn Limit = "watches per connection"  // registry.Config.MaxWatchesPerConn
)

// LimitError reports what a registry refused to keep within its limits.
// errors.Is(err, ErrLimit) holds for it.
type LimitError struct {
	Limit Limit
	Max   int // the limit's value, when the registry said
}

func (e *LimitError) Error() string {
	if e.Max > 0 {
		return fmt.Sprintf("%s: %s (at most %d)", ErrLimit, e.Limit, e.Max)
	}
	return fmt.Sprintf("%s: %s", ErrLimit, e.Limit)
}

// Is makes errors.Is(err, ErrLimit) hold.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }
