package resolve

// HideScheme makes Open behave, until restore, as if no backend had
// registered scheme. This package's tests link the registry and dns
// backends (through sal), and TestOpenNamesTheMissingPlugin plays a
// program that lacks them.
func HideScheme(scheme string) (restore func()) {
	schemes.Lock()
	defer schemes.Unlock()
	open, linked := schemes.open[scheme]
	delete(schemes.open, scheme)
	return func() {
		schemes.Lock()
		defer schemes.Unlock()
		if linked {
			schemes.open[scheme] = open
		}
	}
}
