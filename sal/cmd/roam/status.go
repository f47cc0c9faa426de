package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/roamnet/roam/sal"
)

// status keeps one line at the bottom of a terminal: flows open, bytes
// each way, and the last move with its stall. Log lines go through it
// (it is an io.Writer), so that each is written above the line rather
// than through it.
type status struct {
	w    io.Writer
	done chan struct{}
	wg   sync.WaitGroup

	mu    sync.Mutex
	h     *sal.Host
	line  string // shown now; "" if none
	last  string // the last move, as the line says it
	since time.Time
}

func newStatus(w io.Writer) *status {
	return &status{w: w, done: make(chan struct{})}
}

// start redraws the line every second until stop.
func (s *status) start(h *sal.Host) {
	s.mu.Lock()
	s.h = h
	s.mu.Unlock()
	s.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			s.redraw()
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	})
}

func (s *status) stop() {
	close(s.done)
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.line != "" {
		fmt.Fprint(s.w, "\r\033[K")
		s.line = ""
	}
}

// event remembers a move for the line.
func (s *status) event(e sal.Event) {
	var what string
	switch e.Kind {
	case sal.EventResumed:
		what = fmt.Sprintf("resumed (stall %v)", e.Stall.Round(time.Millisecond))
	case sal.EventMigrated:
		what = "migrated to " + e.To.String()
	case sal.EventRebound:
		what = "moved to " + e.To.String()
	case sal.EventPathDown:
		what = "path " + e.From.String() + " down"
	case sal.EventLost:
		what = "a flow was lost"
	default:
		return
	}
	s.mu.Lock()
	s.last, s.since = what, e.Time
	s.mu.Unlock()
}

func (s *status) redraw() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return
	}
	var open int64
	var sent, received uint64
	for _, st := range s.h.ServiceStats() {
		open += st.FlowsOpen
		sent += st.BytesSent
		received += st.BytesReceived
	}
	line := fmt.Sprintf("roam: %d flows open · sent %s · received %s", open, bytesText(sent), bytesText(received))
	if s.last != "" {
		line += fmt.Sprintf(" · last: %s, %v ago", s.last, time.Since(s.since).Round(time.Second))
	}
	s.line = line
	fmt.Fprint(s.w, "\r\033[K"+line)
}

// Write writes a log line above the status line.
func (s *status) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.line != "" {
		fmt.Fprint(s.w, "\r\033[K")
	}
	n, err := s.w.Write(p)
	if s.line != "" {
		fmt.Fprint(s.w, s.line)
	}
	return n, err
}

func bytesText(n uint64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}
