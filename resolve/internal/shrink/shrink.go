// Package shrink deletes from maps that a peer can grow, giving their
// memory back once they have shrunk.
//
// Go maps never give back the memory of deleted entries, so a map that a
// flood grew (leases, services, watches) would keep its peak size for
// good, and the registry's heap would not come back after the flood ends.
// The maps that a peer can grow are deleted from through Delete, which
// copies a map into a smaller one once it holds an eighth of its peak:
// amortized, a copy costs one step per deletion.
package shrink

// MinPeak is the peak below which a map (or a slice) is left as it is.
const MinPeak = 256

// Delete deletes k from *m, which has held up to *peak entries, and
// replaces *m with a fresh copy when it has shrunk to an eighth of that.
func Delete[K comparable, V any](m *map[K]V, k K, peak *int) {
	*peak = max(*peak, len(*m)) // between deletions a map only grows
	delete(*m, k)
	if *peak < MinPeak || len(*m) > *peak/8 {
		return
	}
	small := make(map[K]V, len(*m))
	for k, v := range *m {
		small[k] = v
	}
	*m = small
	*peak = len(small)
}
