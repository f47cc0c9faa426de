//go:build !linux

package netns

// Do fails where there are no network namespaces.
func (ns *Namespace) Do(fn func() error) error { return Available() }
