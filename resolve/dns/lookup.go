package dns

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/roamnet/roam/resolve"
)

// srvPrefix is prepended to a service ID to form the name of its SRV and
// TXT records (RFC 2782: _service._proto.name).
const srvPrefix = "_roam._udp."

// maxHostQueries bounds the A and AAAA queries one lookup runs at once.
const maxHostQueries = 8

// dnsQueryName returns the SRV name of a case-folded service ID, or an error
// wrapping resolve.ErrInvalid if the result would not be a DNS name that we
// dare send: labels of 1 to 63 letters, digits, '-' or '_', at most 253
// bytes in all. Service IDs are checked more strictly by package sal; this
// is a last guard, so that no garbage reaches the wire.
func dnsQueryName(key string) (string, error) {
	name := strings.TrimSuffix(key, ".")
	full := srvPrefix + name + "."
	switch {
	case name == "":
		return "", fmt.Errorf("%w: empty DNS name", resolve.ErrInvalid)
	case len(full)-1 > 253:
		return "", fmt.Errorf("%w: %q is too long for DNS: %d bytes with %q, limit 253", resolve.ErrInvalid, key, len(full)-1, srvPrefix)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("%w: %q is not a DNS name: label %q is empty or longer than 63 bytes", resolve.ErrInvalid, key, label)
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("%w: %q is not a DNS name: label %q holds %q", resolve.ErrInvalid, key, label, c)
			}
		}
	}
	return full, nil
}

// query asks the servers one question: each server in turn, Attempts
// rounds over all of them, as the system resolver does. It returns the
// first authoritative outcome, an answer (NOERROR) or NXDOMAIN; any other
// response code or a timeout moves on to the next server. Having none, it
// returns a *QueryError for the last failure, or the context's cause.
func (d *Resolver) query(ctx context.Context, name string, typ dnsmessage.Type) (*dnsReply, error) {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", resolve.ErrInvalid, err)
	}
	q := dnsmessage.Question{Name: n, Type: typ, Class: dnsmessage.ClassINET}
	var last error
	for range d.attempts {
		for _, server := range d.servers {
			r, err := d.exchange(ctx, server, q)
			if cause := context.Cause(ctx); cause != nil {
				return nil, cause
			}
			if err != nil {
				last = &QueryError{Server: server.String(), Name: name, Type: typ, Err: err}
			} else if r.rcode != dnsmessage.RCodeSuccess && r.rcode != dnsmessage.RCodeNameError {
				last = &QueryError{Server: server.String(), Name: name, Type: typ, RCode: r.rcode}
			} else {
				return r, nil
			}
			d.log.Debug("dns: query failed", "err", last)
		}
	}
	return nil, last
}

// srvRec is an SRV record as lookups use it.
type srvRec struct {
	prio, weight, port uint16
	target             string
}

// owners returns name and the names its CNAME chain in rrs leads to (at
// most 8 links: a longer chain or a loop is cut), with the lowest TTL of the
// links followed.
func owners(rrs []dnsRR, name string) ([]string, uint32) {
	names, ttl := []string{name}, uint32(math.MaxUint32)
	for range 8 {
		i := slices.IndexFunc(rrs, func(rr dnsRR) bool { return rr.typ == dnsmessage.TypeCNAME && rr.name == name })
		if i < 0 || slices.Contains(names, rrs[i].target) {
			break
		}
		name = rrs[i].target
		names = append(names, name)
		ttl = min(ttl, rrs[i].ttl)
	}
	return names, ttl
}

// records returns the records of type typ that answer name, directly or
// through its CNAME chain, and their lowest TTL (that of the chain too).
func records(rrs []dnsRR, name string, typ dnsmessage.Type) ([]dnsRR, uint32) {
	names, ttl := owners(rrs, name)
	var out []dnsRR
	for _, rr := range rrs {
		if rr.typ == typ && slices.Contains(names, rr.name) {
			out = append(out, rr)
			ttl = min(ttl, rr.ttl)
		}
	}
	return out, ttl
}

// pinFromTXT returns the key that the TXT records of name pin, and their
// TTL. A string "key=<fingerprint>" pins a key; other strings are someone
// else's business. Each string of a record is read on its own (the key
// fits in one). A pin that does not parse, or two pins that differ, are an
// error: dropping a pin would silently downgrade the service to an
// unauthenticated one, which is what an attacker would want.
func pinFromTXT(r *dnsReply, name string) (resolve.Fingerprint, uint32, error) {
	var pin resolve.Fingerprint
	if r.rcode != dnsmessage.RCodeSuccess {
		return pin, math.MaxUint32, nil // NXDOMAIN: nothing pinned
	}
	txts, ttl := records(r.answers, name, dnsmessage.TypeTXT)
	for _, rr := range txts {
		for _, s := range rr.txt {
			k, v, ok := strings.Cut(s, "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(k), "key") {
				continue
			}
			fp, err := resolve.ParseFingerprint(strings.TrimSpace(v))
			if err != nil {
				return resolve.Fingerprint{}, 0, fmt.Errorf("dns: TXT %s: %w", name, err)
			}
			if !pin.IsZero() && fp != pin {
				return resolve.Fingerprint{}, 0, fmt.Errorf("dns: TXT %s: %w: two different keys pinned", name, resolve.ErrInvalidFingerprint)
			}
			pin = fp
		}
	}
	if pin.IsZero() {
		ttl = math.MaxUint32 // the TXT records say nothing we use
	}
	return pin, ttl, nil
}

// orderSRV orders records for trying, per RFC 2782: by priority, lowest
// first, and within a priority by weighted random selection, in which a
// record's chance to come next is its share of the weights left. Records
// of weight zero go first into that draw, so that they are picked only
// when the random number is zero, a small chance, as the RFC asks.
// intN(n) returns a random int in [0, n); tests pass a fixed one.
func orderSRV(recs []srvRec, intN func(int) int) []srvRec {
	recs = slices.Clone(recs)
	slices.SortStableFunc(recs, func(a, b srvRec) int {
		if a.prio != b.prio {
			return int(a.prio) - int(b.prio)
		}
		return min(int(a.weight), 1) - min(int(b.weight), 1) // zero weights first
	})
	out := make([]srvRec, 0, len(recs))
	for len(recs) > 0 {
		n := 1 // records in the current priority
		for n < len(recs) && recs[n].prio == recs[0].prio {
			n++
		}
		group := recs[:n]
		for len(group) > 0 {
			sum := 0
			for _, r := range group {
				sum += int(r.weight)
			}
			pick, run := intN(sum+1), 0 // RFC 2782: uniform in [0, sum]
			i := 0
			for ; i < len(group)-1; i++ {
				if run += int(group[i].weight); run >= pick {
					break
				}
			}
			out = append(out, group[i])
			group = slices.Delete(group, i, i+1)
		}
		recs = recs[n:]
	}
	return out
}

// hostAddrs is what is known of one SRV target's addresses.
type hostAddrs struct {
	addrs []netip.Addr
	ttl   uint32
	err   error // set if no address was found because queries failed
}

// glueFor returns the addresses that the SRV reply's additional section
// gives for target, if any.
func glueFor(r *dnsReply, target string) (hostAddrs, bool) {
	h := hostAddrs{ttl: math.MaxUint32}
	for _, rr := range r.glue {
		if rr.name == target {
			h.addrs = append(h.addrs, rr.addr)
			h.ttl = min(h.ttl, rr.ttl)
		}
	}
	return h, len(h.addrs) > 0
}

// lookupHost asks for target's A and AAAA records at once; sem bounds the
// queries in flight across the lookup. One failed query is forgiven if
// the other finds addresses.
func (d *Resolver) lookupHost(ctx context.Context, target string, sem chan struct{}) hostAddrs {
	var byType [2]hostAddrs
	var wg sync.WaitGroup
	for i, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				byType[i].err = context.Cause(ctx)
				return
			}
			r, err := d.query(ctx, target, typ)
			if err != nil {
				byType[i].err = err
				return
			}
			rrs, ttl := records(r.answers, target, typ)
			byType[i].ttl = ttl
			for _, rr := range rrs {
				byType[i].addrs = append(byType[i].addrs, rr.addr)
			}
		})
	}
	wg.Wait()
	h := hostAddrs{addrs: append(byType[0].addrs, byType[1].addrs...), ttl: math.MaxUint32}
	for _, b := range byType {
		if len(b.addrs) > 0 {
			h.ttl = min(h.ttl, b.ttl)
		}
	}
	if len(h.addrs) == 0 {
		h.err = firstErr(byType[0].err, byType[1].err)
	}
	return h
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// lookup asks DNS for the endpoints of the service whose SRV name is qname,
// and how long they may be kept. Not found is an error wrapping
// resolve.ErrNotFound; other failures wrap ErrFailure,
// resolve.ErrInvalidFingerprint or the context's cause.
func (d *Resolver) lookup(ctx context.Context, qname string) ([]resolve.Endpoint, time.Duration, error) {
	// Ask for the TXT record alongside the SRV: both are needed, and this
	// saves a round trip. If the SRV answer ends the lookup early, the TXT
	// query is cancelled, and waited for, so that no goroutine outlives us.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var txt *dnsReply
	var txtErr error
	wg.Go(func() { txt, txtErr = d.query(ctx, qname, dnsmessage.TypeTXT) })

	srv, err := d.query(ctx, qname, dnsmessage.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	if srv.rcode == dnsmessage.RCodeNameError {
		return nil, 0, fmt.Errorf("%w: dns: %s: NXDOMAIN", resolve.ErrNotFound, qname)
	}
	rrs, ttl := records(srv.answers, qname, dnsmessage.TypeSRV)
	var recs []srvRec
	for _, rr := range rrs {
		// Target "." alone means "decidedly not available" (RFC 2782);
		// port 0 is no endpoint either.
		if rr.target != "." && rr.port != 0 {
			recs = append(recs, srvRec{rr.prio, rr.weight, rr.port, rr.target})
		}
	}
	if len(recs) == 0 {
		return nil, 0, fmt.Errorf("%w: dns: %s: no usable SRV record", resolve.ErrNotFound, qname)
	}
	recs = orderSRV(recs, d.intN)

	wg.Wait()
	if txtErr != nil {
		return nil, 0, txtErr // unknown pin: fail closed rather than go unpinned
	}
	pin, pinTTL, err := pinFromTXT(txt, qname)
	if err != nil {
		return nil, 0, err
	}
	ttl = min(ttl, pinTTL)

	// Addresses: the glue in the SRV reply if it has any for a target, else
	// A and AAAA queries, for all such targets at once.
	hosts := make(map[string]hostAddrs, len(recs))
	var ask []string
	for _, rec := range recs {
		if _, seen := hosts[rec.target]; seen || slices.Contains(ask, rec.target) {
			continue
		}
		if h, ok := glueFor(srv, rec.target); ok {
			hosts[rec.target] = h
		} else {
			ask = append(ask, rec.target)
		}
	}
	asked := make([]hostAddrs, len(ask))
	sem := make(chan struct{}, maxHostQueries)
	for i, target := range ask {
		wg.Go(func() { asked[i] = d.lookupHost(ctx, target, sem) })
	}
	wg.Wait()
	for i, target := range ask {
		hosts[target] = asked[i]
	}

	var eps []resolve.Endpoint
	var hostErr error
	for _, rec := range recs {
		h := hosts[rec.target]
		hostErr = firstErr(hostErr, h.err)
		for _, a := range h.addrs {
			ap := netip.AddrPortFrom(a, rec.port)
			if !slices.ContainsFunc(eps, func(e resolve.Endpoint) bool { return e.Addr == ap }) {
				eps = append(eps, resolve.Endpoint{Addr: ap, Key: pin})
			}
		}
		if len(h.addrs) > 0 {
			ttl = min(ttl, h.ttl)
		}
	}
	if len(eps) == 0 {
		if hostErr != nil {
			return nil, 0, hostErr
		}
		return nil, 0, fmt.Errorf("%w: dns: %s: no target has an address", resolve.ErrNotFound, qname)
	}
	if hostErr != nil {
		d.log.Warn("dns: some SRV targets have no address", "name", qname, "err", hostErr)
	}
	return eps, max(time.Duration(ttl)*time.Second, d.minTTL), nil
}
