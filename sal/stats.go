package sal

import (
	"expvar"
	"strconv"
	"sync"
	"sync/atomic"
)

// ServiceStats counts what one Host did for one service since it started:
// flows this Host dialed to the service, or accepted for it. Every count
// but FlowsOpen only grows.
type ServiceStats struct {
	// FlowsDialed counts the flows Dial returned.
	FlowsDialed uint64 `json:"flows_dialed"`
	// FlowsAccepted counts the flows Accept returned. Flows a Listener
	// refused, or closed before accepting, are not counted anywhere.
	FlowsAccepted uint64 `json:"flows_accepted"`
	// FlowsOpen is how many dialed or accepted flows are not over yet:
	// neither finished in both directions nor lost.
	FlowsOpen int64 `json:"flows_open"`
	// FlowsLost counts dialed or accepted flows that ended with
	// ErrFlowLost: not resumed in time, refused on resume, or cut off by
	// either Host closing.
	FlowsLost uint64 `json:"flows_lost"`
	// BytesSent counts application bytes Write accepted. Bytes sent again
	// after a resume are not counted twice (Conn.Stats has them).
	BytesSent uint64 `json:"bytes_sent"`
	// BytesReceived counts application bytes Read delivered.
	BytesReceived uint64 `json:"bytes_received"`
	// Resumes counts the times this end of a flow moved onto a new stream
	// (the two ends of a flow count theirs separately).
	Resumes uint64 `json:"resumes"`
	// Migrations counts the path switches (QUIC connection migrations, by
	// Rebind or the Monitor) of connections that carried the service's
	// flows at the time: one per switch and service, however many flows.
	Migrations uint64 `json:"migrations"`
}

// serviceCounters is where the flows of one service count. Each flow
// keeps a pointer to its service's counters, so that the data path costs
// an atomic add and no lookup.
type serviceCounters struct {
	dialed, accepted, lost atomic.Uint64
	sent, received         atomic.Uint64
	resumes, migrations    atomic.Uint64
	open                   atomic.Int64
}

func (sc *serviceCounters) snapshot() ServiceStats {
	return ServiceStats{
		FlowsDialed:   sc.dialed.Load(),
		FlowsAccepted: sc.accepted.Load(),
		FlowsOpen:     sc.open.Load(),
		FlowsLost:     sc.lost.Load(),
		BytesSent:     sc.sent.Load(),
		BytesReceived: sc.received.Load(),
		Resumes:       sc.resumes.Load(),
		Migrations:    sc.migrations.Load(),
	}
}

// counters returns the counters of service, creating them.
func (h *Host) counters(service ServiceID) *serviceCounters {
	key := service.String()
	h.acctMu.Lock()
	defer h.acctMu.Unlock()
	sc := h.acct[key]
	if sc == nil {
		sc = new(serviceCounters)
		h.acct[key] = sc
	}
	return sc
}

// ServiceStats returns a snapshot of the Host's counts per service, keyed
// by the canonical service ID (ServiceID.String): as dialed, or as the
// Listener was opened. Counts stay after a service's flows are gone, for
// as long as the Host lives. Each count is read atomically, but not all at
// the same instant.
func (h *Host) ServiceStats() map[string]ServiceStats {
	h.acctMu.Lock()
	defer h.acctMu.Unlock()
	out := make(map[string]ServiceStats, len(h.acct))
	for k, sc := range h.acct {
		out[k] = sc.snapshot()
	}
	return out
}

// countOpen counts c as dialed or accepted, and as open unless it is over
// already. Under c.mu, so that release, which checks c.counted under the
// same lock, never misses it.
func (c *Conn) countOpen() {
	if c.dialer {
		c.acct.dialed.Add(1)
	} else {
		c.acct.accepted.Add(1)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case flowLost:
		c.acct.lost.Add(1)
	case flowDone:
	default:
		c.counted = true
		c.acct.open.Add(1)
	}
}

// countEndLocked takes an ending flow off the open count. c.mu must be
// held, and c.state final.
func (c *Conn) countEndLocked() {
	if !c.counted {
		return
	}
	c.counted = false
	c.acct.open.Add(-1)
	if c.state == flowLost {
		c.acct.lost.Add(1)
	}
}

// migrated counts a path switch of sess's connection for every service
// with a flow on it.
func (sess *session) migrated() {
	sess.mu.Lock()
	flows := make([]*Conn, 0, len(sess.flows))
	for c := range sess.flows {
		flows = append(flows, c)
	}
	sess.mu.Unlock()
	seen := make(map[*serviceCounters]bool)
	for _, c := range flows {
		if !seen[c.acct] {
			seen[c.acct] = true
			c.acct.migrations.Add(1)
		}
	}
}

// roamVars is the expvar.Map "roam": one entry per live Host, each an
// expvar.Func that returns the Host's ServiceStats as JSON.
var (
	roamVars   = expvar.NewMap("roam")
	roamVarsMu sync.Mutex // makes picking a free name and taking it one step
)

// publishStats adds the Host to the "roam" expvar.Map, under the first 16
// characters of its key's fingerprint, followed by "-2", "-3"... when other
// live Hosts of the process share the key. It returns the name.
func (h *Host) publishStats() string {
	prefix := h.id.fp.String()[:16]
	roamVarsMu.Lock()
	defer roamVarsMu.Unlock()
	name := prefix
	for i := 2; roamVars.Get(name) != nil; i++ {
		name = prefix + "-" + strconv.Itoa(i)
	}
	roamVars.Set(name, expvar.Func(func() any { return h.ServiceStats() }))
	roamLimitVars.Set(name, expvar.Func(func() any { return h.LimitStats() }))
	return name
}

func (h *Host) unpublishStats() {
	roamVarsMu.Lock()
	defer roamVarsMu.Unlock()
	roamVars.Delete(h.statsName)
	roamLimitVars.Delete(h.statsName)
}
