package main

import (
	"context"
	"io"
	"sync"
	"time"
)

// workload is what each flow of a lane sends: a bulk transfer, as fast as
// the path takes it (of want bytes, or without end), or a paced stream of
// size bytes every `every`, as a fleet of telemetry feeds sends. Either way
// the bytes are the pattern of pattern.go.
type workload struct {
	want  uint64        // bulk: the transfer's length; 0 sends until the run ends
	every time.Duration // paced: the interval; 0 is bulk
	size  int           // paced: bytes per interval
}

func (w workload) paced() bool { return w.every > 0 }

// gate holds every flow of a run until all are connected, so that all
// start at the same instant, t0, the start of the scenario's clock.
type gate struct {
	mu    sync.Mutex
	ready int
	wake  chan struct{} // signalled when a flow gets ready
	open  chan struct{}
	t0    time.Time
}

func newGate() *gate { return &gate{wake: make(chan struct{}, 1), open: make(chan struct{})} }

// wait counts the caller ready and returns t0 once the gate opens.
func (g *gate) wait(ctx context.Context) (time.Time, error) {
	g.mu.Lock()
	g.ready++
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	select {
	case <-g.open:
		return g.t0, nil
	case <-ctx.Done():
		return time.Time{}, context.Cause(ctx)
	}
}

// waitReady waits until n flows are ready.
func (g *gate) waitReady(ctx context.Context, n int) error {
	for {
		g.mu.Lock()
		ready := g.ready
		g.mu.Unlock()
		if ready >= n {
			return nil
		}
		select {
		case <-g.wake:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// start opens the gate at t0.
func (g *gate) start(t0 time.Time) {
	g.t0 = t0
	close(g.open)
}

// flowSender sends one flow's workload; its send has the shape of
// resumeSender.send, so the baselines resume it from any offset.
type flowSender struct {
	w     workload
	g     *gate
	once  sync.Once
	t0    time.Time
	t0err error
}

func (f *flowSender) send(ctx context.Context, dst io.Writer, off uint64) (uint64, error) {
	f.once.Do(func() { f.t0, f.t0err = f.g.wait(ctx) })
	if f.t0err != nil {
		return off, f.t0err
	}
	buf := make([]byte, 32<<10)
	if !f.w.paced() {
		for f.w.want == 0 || off < f.w.want {
			b := buf
			if f.w.want > 0 {
				b = buf[:min(uint64(len(buf)), f.w.want-off)]
			}
			fillPattern(b, off)
			n, err := dst.Write(b)
			off += uint64(n)
			if err != nil {
				return off, err
			}
			if ctx.Err() != nil {
				return off, context.Cause(ctx)
			}
		}
		return off, nil
	}
	t := time.NewTicker(f.w.every)
	defer t.Stop()
	for {
		due := (uint64(time.Since(f.t0)/f.w.every) + 1) * uint64(f.w.size)
		for off < due {
			b := buf[:min(uint64(len(buf)), due-off)]
			fillPattern(b, off)
			n, err := dst.Write(b)
			off += uint64(n)
			if err != nil {
				return off, err
			}
		}
		select {
		case <-ctx.Done():
			return off, context.Cause(ctx)
		case <-t.C:
		}
	}
}
