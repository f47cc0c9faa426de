package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/mobility/trace"
	"github.com/roamnet/roam/sal"
)

// train is what the trace drives (a trace.Target): the relay that is the
// train's cellular path, and the train's Host. A handover is what a train
// crossing into a new cell goes through: the old cell's address dies at
// once, the path is down for the outage, and then the device has an
// address in the new cell, which the OS tells its programs, so the Host
// Rebinds to it, as its Monitor would. The rest (migrating the QUIC
// connection, or resuming the flow when migration cannot work) roam does
// by itself. The registry is not behind the path: only the flow rides the
// train.
type train struct {
	life     context.Context // the rebinds after outages run under it
	relay    *emu.Relay
	provider *sal.Host
	client   *sal.Host
	dead     emu.DeadAddrs
	log      *slog.Logger
	t0       time.Time
	wg       sync.WaitGroup

	mu        sync.Mutex
	link      trace.Link
	cell      int
	handovers []handover
	tunnels   int
	downUntil time.Time // the path drops everything until then
	downKind  string
}

var _ trace.Target = (*train)(nil)

// handover is one cell change, as the trace scheduled it.
type handover struct {
	at     time.Time
	outage time.Duration
	cell   int        // the cell entered
	link   trace.Link // the link in force when the path came back
}

func (t *train) SetLink(l trace.Link) {
	t.relay.SetLink(l)
	now := time.Now()
	t.mu.Lock()
	t.link = l
	// A trace gives a new cell its link as the outage ends.
	if n := len(t.handovers); n > 0 && now.Before(t.handovers[n-1].at.Add(t.handovers[n-1].outage+time.Second)) {
		t.handovers[n-1].link = l
	}
	t.mu.Unlock()
}

func (t *train) Handover(outage time.Duration) {
	now := time.Now()
	old := t.client.LocalAddr()
	mapped, _ := t.relay.Mapping(old)
	t.dead.Kill(old, mapped)
	t.relay.Handover(outage)

	t.mu.Lock()
	t.cell++
	cell := t.cell
	t.handovers = append(t.handovers, handover{at: now, outage: outage, cell: cell, link: t.link})
	t.setDownLocked(now, outage, "handover")
	t.mu.Unlock()

	t.wg.Go(func() {
		timer := time.NewTimer(outage)
		defer timer.Stop()
		select {
		case <-t.life.Done():
			return
		case <-timer.C:
		}
		// No deadline: roam bounds the path probes itself, and resumes
		// the flow if they fail.
		if err := t.client.Rebind(t.life, cellAddr(cell)); err != nil && t.life.Err() == nil {
			t.log.Warn("rebind", "cell", cell, "err", err)
		}
	})
}

func (t *train) Blackout(d time.Duration) {
	t.relay.Blackout(d)
	now := time.Now()
	t.mu.Lock()
	t.tunnels++
	t.setDownLocked(now, d, "tunnel")
	t.mu.Unlock()
}

// MoveServer moves the provider to a new public address, which it
// registers; the train's flow follows it through the registry's watch.
func (t *train) MoveServer() error {
	if err := t.relay.MoveServer(); err != nil {
		return err
	}
	return t.provider.SetAdvertiseAddr(t.life, t.relay.ServerAddr())
}

func (t *train) setDownLocked(now time.Time, d time.Duration, kind string) {
	if until := now.Add(d); until.After(t.downUntil) {
		t.downUntil, t.downKind = until, kind
	}
}

// outageLeft returns how long the path stays down after at.
func (t *train) outageLeft(at time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return max(t.downUntil.Sub(at), 0)
}

// handoversSoFar returns the handovers so far.
func (t *train) handoversSoFar() []handover {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]handover(nil), t.handovers...)
}

// status returns the train's part of the status line at now.
func (t *train) status(now time.Time, down, up *receiver) status {
	t.mu.Lock()
	st := status{Elapsed: now.Sub(t.t0), Cell: t.cell, Handovers: len(t.handovers)}
	if now.Before(t.downUntil) {
		st.Outage = t.downKind
	}
	var last handover
	if n := len(t.handovers); n > 0 {
		last = t.handovers[n-1]
	}
	t.mu.Unlock()
	if st.Handovers > 0 {
		st.LastStall, st.Stalling = handoverStall(last, down, up, now)
	}
	return st
}

// handoverStall is the longer of the two directions' stalls around h.
func handoverStall(h handover, down, up *receiver, now time.Time) (time.Duration, bool) {
	window := h.outage + stallWindow
	d, dOpen := down.stallAfter(h.at, window, now)
	u, uOpen := up.stallAfter(h.at, window, now)
	if u > d {
		return u, uOpen
	}
	return d, dOpen
}

// cellAddr is the train's address in a cell: 127.0.77.<cell> where all of
// 127/8 can be bound (Linux), else a new port of 127.0.0.1.
func cellAddr(cell int) string {
	if !wideLoopback() {
		return "127.0.0.1:0"
	}
	return fmt.Sprintf("127.0.77.%d:0", 1+(cell-1)%250)
}

var wideLoopback = sync.OnceValue(func() bool {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 77, 1)})
	if err != nil {
		return false
	}
	c.Close()
	return true
})

// linkAt returns the link the trace sets up by at.
func linkAt(tr *trace.Trace, at time.Duration) trace.Link {
	var l trace.Link
	for _, e := range tr.Events {
		if e.At > at {
			break
		}
		l = l.Apply(e)
	}
	return l
}
