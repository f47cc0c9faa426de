package sal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal/internal/wire"
)

// Listener accepts the flows that peers open to one service. It implements
// net.Listener, so it works with http.Serve.
type Listener struct {
	h       *Host
	service ServiceID
	name    string // key in Host.listeners
	queue   chan *Conn
	done    chan struct{}
	reg     resolve.Registration

	mu       sync.Mutex
	closed   bool
	reserved int // queue slots promised to flows whose Reply is being written, or taken
	// byConn counts reserved slots by the connection that asked for them:
	// once the queue is half full, a connection that holds an eighth of it
	// gets no more, so that a flood of flows from one peer cannot make
	// every other peer's dial fail with ErrBusy, while one peer that opens
	// many flows at once, as a proxy does, still has half the queue.
	byConn map[*session]int
}

// Listen starts accepting flows to service and, when the Host's resolver is
// a resolve.Registrar, registers the Host's endpoint for it until the
// Listener is closed. One Host may listen on several services, but on each
// only once. A self-certifying ID must carry this Host's own key.
func (h *Host) Listen(ctx context.Context, service string) (*Listener, error) {
	id, err := ParseServiceID(service)
	if err != nil {
		return nil, &OpError{Op: "listen", Service: service, Err: err}
	}
	return h.ListenService(ctx, id)
}

// ListenService is Listen for a parsed service ID.
func (h *Host) ListenService(ctx context.Context, id ServiceID) (*Listener, error) {
	op := func(err error) error { return &OpError{Op: "listen", Service: id.String(), Err: err} }
	if key, ok := id.Key(); ok && key != h.id.fp {
		return nil, op(fmt.Errorf("%w: the ID names key %s, this Host holds %s", ErrKeyMismatch, key, h.id.fp))
	}
	l := &Listener{
		h:       h,
		service: id,
		name:    id.LookupName(),
		queue:   make(chan *Conn, h.cfg.backlog()),
		done:    make(chan struct{}),
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, op(net.ErrClosed)
	}
	if _, dup := h.listeners[l.name]; dup {
		h.mu.Unlock()
		return nil, op(ErrAlreadyListening)
	}
	if h.qln == nil {
		qln, err := h.cur.tr.Listen(h.serverTLS(), h.listenConf)
		if err != nil {
			h.mu.Unlock()
			return nil, op(err)
		}
		h.qln = qln
		h.wg.Go(func() { h.acceptConns(qln) })
	}
	h.listeners[l.name] = l
	h.mu.Unlock()

	r, err := h.register(ctx, l.name)
	if err != nil {
		l.Close()
		return nil, op(err)
	}
	if r != nil {
		l.mu.Lock()
		l.reg = r
		closed := l.closed
		l.mu.Unlock()
		if closed { // closed while registering
			r.Close()
		}
	}
	h.log.Debug("listening", "service", id, "addr", h.LocalAddr())
	return l, nil
}

// register registers the Host's endpoint for service with the first
// resolver down Config.Resolver's Unwrap chain that takes registrations:
// signed with the Host's key when it is a resolve.SignedRegistrar, so that
// backends which bind services to keys accept it, plain otherwise. It
// returns nil, nil when no resolver takes registrations. A wrapper that
// finds no registrar behind it (an error wrapping resolve.ErrUnsupported)
// counts as none.
func (h *Host) register(ctx context.Context, service string) (resolve.Registration, error) {
	ep := resolve.Endpoint{Addr: h.advertiseAddr(), Key: h.id.fp}
	if sr, ok := findAbility[resolve.SignedRegistrar](h.cfg.Resolver); ok {
		r, err := sr.RegisterSigned(ctx, service, ep, h.id.key)
		if !errors.Is(err, resolve.ErrUnsupported) {
			return r, err
		}
	}
	if reg, ok := findAbility[resolve.Registrar](h.cfg.Resolver); ok {
		r, err := reg.Register(ctx, service, ep)
		if !errors.Is(err, resolve.ErrUnsupported) {
			return r, err
		}
	}
	return nil, nil
}

// findAbility returns the first resolver down r's Unwrap chain that is a T.
func findAbility[T any](r resolve.Resolver) (T, bool) {
	for r != nil {
		if t, ok := r.(T); ok {
			return t, true
		}
		u, ok := r.(interface{ Unwrap() resolve.Resolver })
		if !ok {
			break
		}
		r = u.Unwrap()
	}
	var zero T
	return zero, false
}

func (h *Host) advertiseAddr() netip.AddrPort {
	h.mu.Lock()
	adv := h.advertise
	h.mu.Unlock()
	if adv.IsValid() {
		return adv
	}
	return h.LocalAddr()
}

// SetAdvertiseAddr changes the endpoint the Host's listeners are
// registered at, as when a provider behind a NAT or a relay learns that
// its public address changed, and re-registers every listener there. The
// zero AddrPort returns to advertising LocalAddr. Dialers whose resolver
// pushes changes move their flows to the new address.
func (h *Host) SetAdvertiseAddr(ctx context.Context, ap netip.AddrPort) error {
	h.mu.Lock()
	h.advertise = ap
	listeners := make([]*Listener, 0, len(h.listeners))
	for _, l := range h.listeners {
		listeners = append(listeners, l)
	}
	h.mu.Unlock()
	var errs []error
	for _, l := range listeners {
		if err := l.reregister(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return &OpError{Op: "advertise", Endpoint: ap, Err: errors.Join(errs...)}
	}
	return nil
}

// Accept waits for the next flow. It implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptContext(context.Background())
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptContext waits for the next flow or for ctx to end.
func (l *Listener) AcceptContext(ctx context.Context) (*Conn, error) {
	select {
	case c := <-l.queue:
		l.unreserve(c.queuedOn)
		c.countOpen()
		return c, nil
	case <-l.done:
		return nil, &OpError{Op: "accept", Service: l.service.String(), Err: net.ErrClosed}
	case <-ctx.Done():
		return nil, &OpError{Op: "accept", Service: l.service.String(), Err: contextErr(ctx)}
	}
}

// Close stops accepting, withdraws the registration, and ends the flows
// that were waiting to be accepted. Flows already accepted go on.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	reg := l.reg
	l.mu.Unlock()

	l.h.mu.Lock()
	if l.h.listeners[l.name] == l {
		delete(l.h.listeners, l.name)
	}
	l.h.mu.Unlock()

	var err error
	if reg != nil {
		err = reg.Close()
	}
	for {
		select {
		case c := <-l.queue:
			c.reject()
		default:
			return err
		}
	}
}

// Addr returns the service's address. It implements net.Listener.
func (l *Listener) Addr() net.Addr { return Addr{Service: l.service, Endpoint: l.h.LocalAddr()} }

// Service returns the service the Listener accepts flows for.
func (l *Listener) Service() ServiceID { return l.service }

// reserve promises a flow of sess's connection a slot in the accept queue,
// so that the Reply "ok" is only sent for a flow that will be delivered.
func (l *Listener) reserve(sess *session) wire.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return wire.StatusUnavailable
	case l.reserved >= cap(l.queue):
		return wire.StatusBusy
	case l.reserved >= cap(l.queue)/2 && l.byConn[sess] >= max(1, cap(l.queue)/8):
		// Past half full, a connection that holds an eighth already
		// waits its turn: the other half stays for the other peers.
		l.h.limits.backlogRefused.Add(1)
		return wire.StatusBusy
	}
	l.reserved++
	if l.byConn == nil {
		l.byConn = make(map[*session]int)
	}
	l.byConn[sess]++
	return wire.StatusOK
}

// unreserve gives back a slot reserve took for sess's connection.
func (l *Listener) unreserve(sess *session) {
	l.mu.Lock()
	l.unreserveLocked(sess)
	l.mu.Unlock()
}

func (l *Listener) unreserveLocked(sess *session) {
	l.reserved--
	if l.byConn[sess]--; l.byConn[sess] <= 0 {
		delete(l.byConn, sess)
	}
}

// deliver hands an accepted flow to Accept. The queue has room: the slot
// was reserved. A Listener closed meanwhile ends the flow instead.
func (l *Listener) deliver(c *Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.unreserveLocked(c.queuedOn)
		c.reject()
		return
	}
	l.queue <- c
}
