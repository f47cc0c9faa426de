package etcd

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/roamnet/roam/resolve"
)

// errEtcdUnsigned refuses Register: a record without a proof would be
// dropped by every reader anyway.
var errEtcdUnsigned = fmt.Errorf("%w: the etcd backend takes only signed registrations; use RegisterSigned with the service's key", resolve.ErrUnsigned)

// errSuperseded means a newer registration of the same address holds its
// key, so this one must not overwrite it.
var errSuperseded = errors.New("resolve: a newer registration of the address replaced this one")

// etcdReg is one registration: a record under a lease kept alive by run.
type etcdReg struct {
	e       *Backend
	service string
	key     string // the record's etcd key
	owner   string // the owner key; empty for a self-certifying ID
	fp      resolve.Fingerprint
	val     string // the record

	ctx    context.Context // ends run; child of e.ctx
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	mu     sync.Mutex
	lease  clientv3.LeaseID
	closed bool
}

// Register refuses, with an error wrapping resolve.ErrUnsigned: readers
// accept only records signed by the service's key, so use RegisterSigned.
func (e *Backend) Register(ctx context.Context, service string, ep resolve.Endpoint) (resolve.Registration, error) {
	svc, err := resolve.ServiceKey("register", service)
	if err != nil {
		return nil, err
	}
	return nil, &resolve.Error{Op: "register", Service: svc, Err: errEtcdUnsigned}
}

// RegisterSigned implements SignedRegistrar: it binds service to key's
// fingerprint if nobody holds it yet (a self-certifying ID is bound to its
// own key), and publishes ep, signed by key, under a lease kept alive until
// the Registration is closed. ctx bounds the registration, not its life.
func (e *Backend) RegisterSigned(ctx context.Context, service string, ep resolve.Endpoint, key crypto.Signer) (resolve.Registration, error) {
	svc, err := resolve.ServiceKey("register", service)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (resolve.Registration, error) {
		return nil, &resolve.Error{Op: "register", Service: svc, Err: err}
	}
	if key == nil {
		return fail(fmt.Errorf("%w: no key", resolve.ErrInvalid))
	}
	fp, err := resolve.FingerprintOf(key.Public())
	if err != nil {
		return fail(fmt.Errorf("%w: %w", resolve.ErrInvalid, err))
	}
	if ep.Key.IsZero() {
		ep.Key = fp
	}
	if err := ep.Validate(); err != nil {
		return fail(err)
	}
	// Refuse a self-certifying ID under a foreign key without asking etcd.
	if err := resolve.CheckOwner(svc, fp, resolve.Fingerprint{}); err != nil {
		return fail(err)
	}
	if err := e.check(ctx, svc); err != nil {
		return fail(err)
	}
	proof, err := resolve.Sign(key, etcdDomain, e.binding, svc, ep)
	if err != nil {
		return fail(err)
	}
	val, err := json.Marshal(etcdRecord{
		V: etcdRecordVersion, Addr: ep.Addr, Key: ep.Key, TTL: ep.TTL,
		Pub: proof.PublicKey, Sig: proof.Signature,
	})
	if err != nil {
		return fail(err)
	}
	r := &etcdReg{e: e, service: svc, key: e.epKey(svc, ep.Addr), fp: fp, val: string(val), done: make(chan struct{})}
	if _, pinned, _ := resolve.IDKey(svc); !pinned {
		r.owner = e.ownerKey(svc)
	}

	lease, err := e.grant(ctx)
	if err != nil {
		return fail(e.rpcErr(ctx, err))
	}
	if err := r.put(ctx, lease, true); err != nil {
		e.revoke(lease) // or it would linger, empty, until it expired
		if !errors.Is(err, resolve.ErrNotOwner) {
			err = e.rpcErr(ctx, err)
		}
		return fail(err)
	}
	r.lease = lease
	r.ctx, r.cancel = context.WithCancel(e.ctx)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		r.cancel()
		e.revoke(lease)
		return fail(resolve.ErrClosed)
	}
	e.regs[r] = struct{}{}
	e.wg.Add(1)
	go r.run()
	e.mu.Unlock()
	return r, nil
}

func (e *Backend) grant(ctx context.Context) (clientv3.LeaseID, error) {
	resp, err := e.cli.Grant(ctx, e.ttl)
	if err != nil {
		return 0, err
	}
	return resp.ID, nil
}

// revoke ends a lease and so deletes its keys. A lease that is gone
// already is no error.
func (e *Backend) revoke(lease clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	_, err := e.cli.Revoke(ctx, lease)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return nil
	}
	return err
}

// put writes the record under lease, binding the service to r's key first
// if it is bound to none. With replace, the record overwrites any other
// record of the address (a new registration supersedes an old one);
// without, it is written only where there is none, so that renewing a
// lost registration never overwrites a newer one.
func (r *etcdReg) put(ctx context.Context, lease clientv3.LeaseID, replace bool) error {
	kv := r.e.cli.KV
	put := clientv3.OpPut(r.key, r.val, clientv3.WithLease(lease))
	var free []clientv3.Cmp
	if !replace {
		free = append(free, clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0))
	}
	if r.owner == "" { // the ID binds the service; nothing to claim
		resp, err := kv.Txn(ctx).If(free...).Then(put).Else(clientv3.OpGet(r.key)).Commit()
		switch {
		case err != nil:
			return err
		case !resp.Succeeded && !r.wroteOn(resp.Responses[0].GetResponseRange(), lease):
			return errSuperseded
		}
		return nil
	}
	fp := r.fp.String()
	// Rarely more than one round: only a rival claiming the name at the
	// same instant (or a hand deleting its owner key) sends us round again.
	for range 4 {
		resp, err := kv.Txn(ctx).
			If(append(free, clientv3.Compare(clientv3.Value(r.owner), "=", fp))...).
			Then(put).
			Else(clientv3.OpGet(r.owner), clientv3.OpGet(r.key)).
			Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			return nil
		}
		owner, rec := resp.Responses[0].GetResponseRange(), resp.Responses[1].GetResponseRange()
		if r.wroteOn(rec, lease) {
			return nil
		}
		if len(owner.Kvs) > 0 {
			bound, err := resolve.ParseFingerprint(string(owner.Kvs[0].Value))
			if err != nil {
				return fmt.Errorf("%w: the service's owner key holds %q", resolve.ErrNotOwner, owner.Kvs[0].Value)
			}
			if err := resolve.CheckOwner(r.service, r.fp, bound); err != nil {
				return err
			}
			if bound == r.fp {
				return errSuperseded // so only the record's compare failed
			}
			continue // the owner changed between the compare and the get
		}
		if !replace && len(rec.Kvs) > 0 {
			return errSuperseded
		}
		resp, err = kv.Txn(ctx).
			If(append(free, clientv3.Compare(clientv3.CreateRevision(r.owner), "=", 0))...).
			Then(clientv3.OpPut(r.owner, fp), put).
			Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("the owner key %s keeps changing", r.owner)
}

// wroteOn reports whether rec is r's own record on lease: a put of ours
// whose answer was lost (it outlasted the deadline) and which renew then
// tried again. Without this, renew would take its own write for a newer
// registration and stop keeping the lease alive.
func (r *etcdReg) wroteOn(rec *etcdserverpb.RangeResponse, lease clientv3.LeaseID) bool {
	return rec != nil && len(rec.Kvs) == 1 && clientv3.LeaseID(rec.Kvs[0].Lease) == lease &&
		string(rec.Kvs[0].Value) == r.val
}

// run keeps the lease alive until the registration is closed, and makes
// the registration again whenever the lease is lost.
func (r *etcdReg) run() {
	defer r.e.wg.Done()
	defer close(r.done)
	var b etcdBackoff
	for {
		lease := r.currentLease()
		start := time.Now()
		// The client closes the channel when the lease is gone, or when it
		// has heard nothing for a whole TTL (etcd out of reach).
		if ch, err := r.e.cli.KeepAlive(r.ctx, lease); err == nil {
			for range ch {
			}
		}
		if r.ctx.Err() != nil {
			return
		}
		// A keep-alive that ends at once, again and again, must not spin.
		if time.Since(start) < time.Second {
			if !b.wait(r.ctx) {
				return
			}
		} else {
			b.reset()
		}
		r.e.log.Info("etcd: registration lost its lease; registering again",
			"service", r.service, "key", r.key, "lease", lease)
		if !r.renew(lease) {
			return
		}
	}
}

// renew gets the registration back after its keep-alive stopped, retrying
// until it succeeds, a newer registration took its place, or it is closed.
// It reports whether there is a lease to keep alive.
func (r *etcdReg) renew(lease clientv3.LeaseID) bool {
	attached := true // the record is on lease, if lease still lives
	var b etcdBackoff
	for {
		ctx, cancel := context.WithTimeout(r.ctx, r.e.timeout)
		_, err := r.e.cli.KeepAliveOnce(ctx, lease)
		switch {
		case err == nil && attached:
			// etcd restores leases with a fresh TTL when it elects a
			// leader, so a short outage may have cost nothing.
			cancel()
			return true
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			if lease, err = r.e.grant(ctx); err == nil {
				r.setLease(lease)
				attached = false
			}
		}
		if err == nil {
			err = r.put(ctx, lease, false)
			switch {
			case err == nil:
				cancel()
				r.e.log.Info("etcd: registered again", "service", r.service, "key", r.key, "lease", lease)
				return true
			case errors.Is(err, errSuperseded), errors.Is(err, resolve.ErrNotOwner):
				cancel()
				r.e.log.Info("etcd: registration not renewed", "service", r.service, "key", r.key, "err", err)
				return false // Close revokes the unused lease
			}
		}
		cancel()
		r.e.log.Debug("etcd: renewing a registration", "service", r.service, "err", err)
		if !b.wait(r.ctx) {
			return false
		}
	}
}

func (r *etcdReg) currentLease() clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

func (r *etcdReg) setLease(l clientv3.LeaseID) {
	r.mu.Lock()
	r.lease = l
	r.mu.Unlock()
}

// Close withdraws the record at once by revoking its lease (unless a newer
// registration of the address replaced it: its record stays). The first
// Close returns an error if etcd could not be told, and the record then
// lasts until its lease expires; later calls return nil.
func (r *etcdReg) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()

	e := r.e
	e.mu.Lock()
	_, live := e.regs[r]
	delete(e.regs, r)
	e.mu.Unlock()
	if !live {
		return nil // Backend.Close withdrew it
	}
	r.cancel()
	<-r.done
	if err := e.revoke(r.currentLease()); err != nil {
		return &resolve.Error{Op: "register", Service: r.service,
			Err: fmt.Errorf("withdraw: etcd: %w (the record lasts until its lease expires)", err)}
	}
	return nil
}

// etcdBackoff spaces out retries against an unreachable cluster: from
// 50ms, doubling to 2s, with jitter so that many Hosts do not retry in
// step.
type etcdBackoff struct{ d time.Duration }

func (b *etcdBackoff) wait(ctx context.Context) bool {
	b.d = min(max(2*b.d, 50*time.Millisecond), 2*time.Second)
	t := time.NewTimer(b.d/2 + rand.N(b.d/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *etcdBackoff) reset() { b.d = 0 }
