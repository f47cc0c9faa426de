package registry

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/regwire"
	"github.com/roamnet/roam/resolve/internal/shrink"
)

// Leases and the names they bind. Lock order as in limits.go;
// everything here runs under Server.mu.

func (c *registryConn) register(f *regwire.Frame) *regwire.Frame {
	r := c.r
	r.counters.registrations.Add(1)
	service := strings.ToLower(f.Service)
	ep := resolve.Endpoint{Addr: f.Endpoint.Addr, Key: f.Endpoint.Key}
	refuse := func(err error) *regwire.Frame {
		r.counters.refused.Add(1)
		if le := (*resolve.LimitError)(nil); errors.As(err, &le) {
			r.limits.count(le)
		}
		r.cfg.Logger.Debug("registry: registration refused", "service", service, "remote", c.qc.RemoteAddr(), "err", err)
		return errorAnswer(f.ID, err)
	}
	if err := checkServiceName(service); err != nil {
		return refuse(err)
	}
	if !ep.Addr.Addr().IsValid() || ep.Addr.Port() == 0 {
		return refuse(fmt.Errorf("%w: endpoint address %v", resolve.ErrInvalid, ep.Addr))
	}
	proof := resolve.Proof{PublicKey: f.PublicKey, Signature: f.Signature}
	if err := proof.Verify(proofDomain, c.ekm, service, ep); err != nil {
		return refuse(err)
	}
	// "This machine" means the machine the registration came from.
	if ep.Addr.Addr().IsUnspecified() && c.remote.IsValid() {
		ep.Addr = netip.AddrPortFrom(c.remote, ep.Addr.Port())
	}
	ep.TTL = r.cfg.AnswerTTL

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return refuse(resolve.ErrClosed)
	}
	b := r.owners[service]
	if b != nil && b.leases == 0 && time.Now().After(b.until) {
		r.unbindLocked(service, b) // lapsed; its timer is late
		b = nil
	}
	var bound resolve.Fingerprint
	if b != nil {
		bound = b.key
	}
	if err := resolve.CheckOwner(service, ep.Key, bound); err != nil {
		return refuse(ownerRefusal(err, b))
	}
	k := leaseKey{service, ep.Addr}
	old := r.byAddr[k]
	if old == nil {
		// A new lease; one that renews an address's registration (a
		// provider that reconnected) takes the old one's place.
		if le := r.leaseLimitLocked(c, b, ep.Key); le != nil {
			return refuse(le)
		}
	}
	r.registrar.set(k, c.scope) // before Health sees the endpoint
	reg, err := r.mem.Register(r.ctx, service, ep)
	if err != nil {
		if old == nil {
			r.registrar.forget(k)
		}
		return refuse(err)
	}
	if b == nil {
		b = &binding{key: ep.Key}
		r.owners[service] = b
	}
	if old != nil {
		// The same address again: the new registration superseded the old
		// one in r.mem; retire its lease, but keep what it held.
		r.dropLease(old, false)
	}
	l := &lease{id: newLeaseID(r.leases), key: k, fp: ep.Key, reg: reg, owner: c}
	r.extendLocked(l)
	r.leases[l.id] = l
	r.byAddr[k] = l
	r.byKey[ep.Key]++
	if b.leases++; b.held != nil {
		r.held.Remove(b.held)
		b.held = nil
	}
	c.mu.Lock()
	c.leases++
	c.mu.Unlock()
	if h, ok := r.view.(*resolve.Health); ok {
		h.Track(service)
	}
	return &regwire.Frame{Type: regwire.TypeLease, ID: f.ID, Lease: l.id, TTL: r.cfg.LeaseTTL}
}

// leaseLimitLocked says which limit one more lease, by c, under binding b
// (nil for a new name), pinning key, would go over; nil if none. r.mu must
// be held.
func (r *Server) leaseLimitLocked(c *registryConn, b *binding, key resolve.Fingerprint) *resolve.LimitError {
	c.mu.Lock()
	byConn := c.leases
	c.mu.Unlock()
	switch cfg := &r.cfg; {
	case byConn >= cfg.MaxLeasesPerConn:
		return &resolve.LimitError{Limit: resolve.LimitLeasesPerConn, Max: cfg.MaxLeasesPerConn}
	case r.byKey[key] >= cfg.MaxLeasesPerKey:
		return &resolve.LimitError{Limit: resolve.LimitLeasesPerKey, Max: cfg.MaxLeasesPerKey}
	case b != nil && b.leases >= cfg.MaxEndpoints:
		return &resolve.LimitError{Limit: resolve.LimitEndpoints, Max: cfg.MaxEndpoints}
	case len(r.leases) >= cfg.MaxLeases:
		return &resolve.LimitError{Limit: resolve.LimitLeases, Max: cfg.MaxLeases}
	}
	return nil
}

// newLeaseID returns an unguessable lease ID not in use: a lease ID is what
// renews and withdraws a registration, so it must not be guessable.
func newLeaseID(inUse map[uint64]*lease) uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if id := binary.BigEndian.Uint64(b[:]); id != 0 && inUse[id] == nil {
			return id
		}
	}
}

var errUnknownLease = errors.New("resolve: unknown lease")

func (r *Server) renew(id, leaseID uint64) *regwire.Frame {
	r.counters.renewals.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.leases[leaseID]
	if l == nil || r.closed {
		return errorFrame(id, regwire.CodeUnknownLease, "unknown lease: register again")
	}
	r.extendLocked(l)
	return &regwire.Frame{Type: regwire.TypeLease, ID: id, Lease: l.id, TTL: r.cfg.LeaseTTL}
}

// extendLocked gives l a full LeaseTTL from now. Every lease lives as
// long, so the leases in order of expiry are the leases in order of their
// last registration or renewal: a list, and one timer for its front. A
// timer per lease cost more, and a stopped timer can linger in the
// runtime's heap, with all it refers to, long after its lease ended.
// r.mu must be held.
func (r *Server) extendLocked(l *lease) {
	l.expires = time.Now().Add(r.cfg.LeaseTTL)
	if l.inLine == nil {
		l.inLine = r.expiries.PushBack(l)
	} else {
		r.expiries.MoveToBack(l.inLine)
	}
	switch {
	case r.expireAt == nil:
		r.expireAt = time.AfterFunc(r.cfg.LeaseTTL, r.expireDue)
	case r.expiries.Len() == 1:
		r.expireAt.Reset(r.cfg.LeaseTTL)
	}
}

// expireDue drops the leases whose time has come, and waits for the next.
// A timer that fires early (its lease was renewed) finds none due.
func (r *Server) expireDue() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	now := time.Now()
	for e := r.expiries.Front(); e != nil; e = r.expiries.Front() {
		l := e.Value.(*lease)
		if l.expires.After(now) {
			r.expireAt.Reset(l.expires.Sub(now))
			return
		}
		r.counters.expired.Add(1)
		r.dropLease(l, true)
	}
}

func (r *Server) withdraw(id, leaseID uint64) *regwire.Frame {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.leases[leaseID]; l != nil {
		r.dropLease(l, true)
	}
	return &regwire.Frame{Type: regwire.TypeOK, ID: id}
}

// dropLease forgets l, withdrawing its endpoint when withdraw is set (not
// when a newer registration of the same address superseded it, which also
// takes its place in the name's count). r.mu must be held.
func (r *Server) dropLease(l *lease, withdraw bool) {
	r.expiries.Remove(l.inLine)
	shrink.Delete(&r.leases, l.id, &r.peaks.leases)
	if r.byAddr[l.key] == l {
		shrink.Delete(&r.byAddr, l.key, &r.peaks.byAddr)
		if withdraw { // else the new lease has the address, and its registrant
			r.registrar.forget(l.key)
		}
	}
	if r.byKey[l.fp]--; r.byKey[l.fp] <= 0 {
		shrink.Delete(&r.byKey, l.fp, &r.peaks.byKey)
	}
	if b := r.owners[l.key.service]; b != nil {
		if b.leases--; b.leases == 0 && withdraw {
			r.releaseLocked(l.key.service, b)
		}
	}
	l.owner.mu.Lock()
	l.owner.leases--
	l.owner.mu.Unlock()
	if withdraw {
		l.reg.Close()
	}
}

// releaseLocked holds a name whose last lease ended bound to its key for
// BindingTTL, so that a provider that restarts keeps it and nobody takes
// it meanwhile; a self-certifying ID, bound by its very name, is let go at
// once. Past MaxHeldNames, the name released longest ago lapses early:
// without a bound, register-and-withdraw churn under fresh names grew the
// map for a day. r.mu must be held.
func (r *Server) releaseLocked(service string, b *binding) {
	if h, ok := r.view.(*resolve.Health); ok {
		h.Untrack(service)
	}
	if _, selfCertifying, _ := resolve.IDKey(service); selfCertifying {
		shrink.Delete(&r.owners, service, &r.peaks.owners)
		return
	}
	b.until = time.Now().Add(r.cfg.BindingTTL)
	b.held = r.held.PushBack(service)
	for r.held.Len() > r.cfg.MaxHeldNames {
		name := r.held.Front().Value.(string)
		r.unbindLocked(name, r.owners[name])
		r.limits.namesReleasedEarly.Add(1)
	}
	if r.pruneAt == nil {
		r.pruneAt = time.AfterFunc(r.cfg.BindingTTL, r.pruneNames)
	} else if r.held.Len() == 1 {
		r.pruneAt.Reset(r.cfg.BindingTTL)
	}
}

// unbindLocked forgets a name that has no lease. r.mu must be held.
func (r *Server) unbindLocked(service string, b *binding) {
	if b.held != nil {
		r.held.Remove(b.held)
		b.held = nil
	}
	shrink.Delete(&r.owners, service, &r.peaks.owners)
}

// pruneNames lets the names whose binding lapsed go, oldest first, and
// waits for the next. The held names are in the order they lapse, since
// every one is held for the same BindingTTL.
func (r *Server) pruneNames() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	now := time.Now()
	for e := r.held.Front(); e != nil; e = r.held.Front() {
		name := e.Value.(string)
		b := r.owners[name]
		if b.until.After(now) {
			r.pruneAt.Reset(b.until.Sub(now))
			return
		}
		r.unbindLocked(name, b)
	}
}

// checkServiceName accepts DNS-style names: labels of letters, digits and
// hyphens, 1-63 bytes each, 253 in all (case already folded).
func checkServiceName(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("%w: service name of %d bytes", resolve.ErrInvalid, len(s))
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: service name %q: bad label %q", resolve.ErrInvalid, s, label)
		}
		for i := 0; i < len(label); i++ {
			if ch := label[i]; !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
				return fmt.Errorf("%w: service name %q: byte %q", resolve.ErrInvalid, s, ch)
			}
		}
	}
	if _, _, err := resolve.IDKey(s); err != nil {
		return err
	}
	return nil
}

// ownerRefusal says, beside resolve.CheckOwner's refusal, who holds the name
// and for how long, and what fixes it: a provider restarted with a fresh key
// is refused its own name until the binding lapses, which is a day by
// default, so the error must lead to the key file rather than a wait.
func ownerRefusal(err error, b *binding) error {
	if b == nil {
		return err
	}
	if b.leases > 0 {
		return fmt.Errorf("%w (held by %d live registration(s) under that key; "+
			"serve it with that key, or pick another name)", err, b.leases)
	}
	return fmt.Errorf("%w (held for that key until %s, after its last provider left; "+
		"restart the provider with the key it had, e.g. sal.LoadKey or roam -key FILE, or wait)",
		err, b.until.UTC().Format(time.RFC3339))
}
