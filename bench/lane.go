package main

import (
	"context"
	"time"

	"github.com/roamnet/roam/mobility/trace"
	"github.com/roamnet/roam/sal"
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
	link    trace.Link   // the first path's
	links   []trace.Link // every path's, for a multiLane
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
	// multiPath, if set, makes the lane of a multi-path scenario, which
	// gets every path's events; else newLane's runs on the first path.
	multiPath func() lane
	// dualOnly systems run only the multi-path scenarios, and are left
	// out of the others' tables.
	dualOnly bool
}

// laneFor makes the system's lane for sc.
func (s system) laneFor(sc *scenario) lane {
	if s.multiPath != nil && pathsOf(sc.events) > 1 {
		return s.multiPath()
	}
	return s.newLane()
}

// notDual says why a dual-path system cannot run sc, or "".
func notDual(sc *scenario) string {
	if pathsOf(sc.events) < 2 {
		return "a single-path scenario"
	}
	return ""
}

func allSystems() []system {
	none := func(*scenario) string { return "" }
	// TCP runs in the kernel over the same link model as the others where
	// namespaces and TUN devices can be made; elsewhere through the
	// userspace proxy, which cannot lose a byte, so TCP is spared the
	// random loss of the others' paths.
	tcp := system{name: "tcp", title: "TCP (Linux, netns), reconnect+resume", unsupported: none, newLane: func() lane { return &kernelLane{} }}
	if kernelAvailable() != "" {
		tcp = system{name: "tcp", title: "TCP (userspace proxy: no random loss), reconnect+resume", unsupported: none, newLane: func() lane { return &tcpLane{} }}
	}
	return []system{
		{name: "roam", title: "roam (in a multi-path scenario: on the first path alone, over emu.MultiPath)", unsupported: none,
			newLane: func() lane { return &roamLane{} }, multiPath: func() lane { return &multiRoamLane{paths: 1} }},
		tcp,
		{name: "quic", title: "quic-go, no migration, reconnect+resume", unsupported: none, newLane: func() lane { return &quicLane{} }},
		{name: "quic-migrate", title: "quic-go, hand-driven migration", unsupported: none, newLane: func() lane { return &quicLane{migrate: true} }},
		{name: "mptcp", title: "MPTCP (Linux, netns), reconnect+resume", unsupported: mptcpUnsupported, newLane: func() lane { return &kernelLane{multipath: true} }},
		{name: "roam-dual", title: "roam over both paths at once (Config.Paths), over emu.MultiPath", dualOnly: true,
			unsupported: notDual, newLane: func() lane { return &multiRoamLane{paths: 2} }},
		{name: "roam-agg", title: "roam over both paths with each flow on both at once (PathAggregate), over emu.MultiPath", dualOnly: true,
			unsupported: notDual, newLane: func() lane { return &multiRoamLane{paths: 2, policy: sal.PathAggregate} }},
		{name: "mptcp-dual", title: "MPTCP with a subflow endpoint on each path (Linux, netns), reconnect+resume", dualOnly: true,
			unsupported: func(sc *scenario) string {
				if why := notDual(sc); why != "" {
					return why
				}
				return mptcpUnsupported(sc)
			},
			newLane: func() lane { return &dualKernelLane{kernelLane{multipath: true, dual: true}} }},
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
