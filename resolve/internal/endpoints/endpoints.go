// Package endpoints holds what the backends under resolve share about
// endpoint sets and that is no public API.
package endpoints

import "github.com/roamnet/roam/resolve"

// Same compares two sets by address and key, in any order: DNS draws a
// new SRV order at each refresh and counts TTLs down, and neither is a
// change worth pushing to a watcher.
func Same(a, b []resolve.Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
outer:
	for _, x := range a {
		for _, y := range b {
			if x.Addr == y.Addr && x.Key == y.Key {
				continue outer
			}
		}
		return false
	}
	return true
}
