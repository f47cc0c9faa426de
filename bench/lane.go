package main

import (
	"context"
	"time"

	"github.com/roamnet/roam/mobility/trace"
)

// A lane is one system carrying one scenario's flows over an emulated
// path of its own. Every lane of a scenario gets the same link and the
// same events at the same times; the lanes of the long scenarios run side
// by side, so that the machine's noise hits every system alike.
type lane interface {
	// start opens the path and both ends and connects every flow; the
	// flows then wait at env.gate.
	start(ctx context.Context, env *laneEnv) error
	// The path's controls, called by play.
	setLink(trace.Link)
	blackout(time.Duration)
	// handover drops everything for outage; then the client has a new
	// address, and knows it, as a device's OS tells its programs.
	handover(ctx context.Context, outage time.Duration)
	// rebind gives the client a new port at the server's side, as a NAT
	// does; the client is not told.
	rebind()
	// moveServer gives the server a new address, which it registers.
	moveServer(ctx context.Context)
	// counts returns the errors the application saw, the connections it
	// opened again, and (roam) the flows the library resumed.
	counts() laneCounts
	close()
}

type laneCounts struct {
	appErrors, reconnects, resumes int64
}

// laneEnv is what a lane is given: the link at the start, and per flow
// the sender to write with and the record to read into.
type laneEnv struct {
	link    trace.Link
	seed    uint64
	gate    *gate
	senders []*flowSender
	records []*flowRecord
}

// service is the name every system's server is found by.
const service = "bulk.bench"

// system is one of the systems compared.
type system struct {
	name  string
	title string
	// unsupported says why the system cannot run sc here, or "".
	unsupported func(sc *scenario) string
	newLane     func() lane
}

func allSystems() []system {
	none := func(*scenario) string { return "" }
	// TCP runs in the kernel over the same link model as the others where
	// namespaces and TUN devices can be made; elsewhere through the
	// userspace proxy, which cannot lose a byte, so TCP is spared the
	// random loss of the others' paths.
	tcp := system{"tcp", "TCP (Linux, netns), reconnect+resume", none, func() lane { return &kernelLane{} }}
	if kernelAvailable() != "" {
		tcp = system{"tcp", "TCP (userspace proxy: no random loss), reconnect+resume", none, func() lane { return &tcpLane{} }}
	}
	return []system{
		{"roam", "roam", none, func() lane { return &roamLane{} }},
		tcp,
		{"quic", "quic-go, no migration, reconnect+resume", none, func() lane { return &quicLane{} }},
		{"quic-migrate", "quic-go, hand-driven migration", none, func() lane { return &quicLane{migrate: true} }},
		{"mptcp", "MPTCP (Linux, netns), reconnect+resume", mptcpUnsupported, func() lane { return &kernelLane{multipath: true} }},
	}
}

// afterOutage runs f once outage has passed, unless ctx ends first.
func afterOutage(ctx context.Context, outage time.Duration, f func()) {
	t := time.NewTimer(outage)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
		f()
	}
}
