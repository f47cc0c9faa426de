package resolvetest

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

// LogBuffer collects what a component logs (a backend's slog output, a
// process's stderr) for a test to search while writers still write: its
// methods are safe for concurrent use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logger returns a text logger at info level that writes to b.
func (b *LogBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// Has reports whether s was written.
func (b *LogBuffer) Has(s string) bool { return strings.Contains(b.String(), s) }

// Count reports how many times s was written.
func (b *LogBuffer) Count(s string) int { return strings.Count(b.String(), s) }
