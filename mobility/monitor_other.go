//go:build !linux

package mobility

import "errors"

// Only Linux has an event source so far; elsewhere the Monitor polls. A
// macOS route socket (AF_ROUTE) or Windows' NotifyIpInterfaceChange would
// slot in here as another eventSource.
func newEventSource() (eventSource, error) { return nil, errors.ErrUnsupported }

// sysfsNet is unused outside Linux; the sysfs probes below say nothing, so
// kinds come from ClassifyName alone.
const sysfsNet = ""

func osKind(string, string) Kind { return KindUnknown }

func osVirtual(string, string) bool { return false }
