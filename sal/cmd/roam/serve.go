package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/roamnet/roam/sal"
)

// runServe: roam serve SERVICE tcp://HOST:PORT. Every flow to SERVICE
// becomes a TCP connection to HOST:PORT.
func runServe(c *cli, ctx context.Context, args []string) error {
	set := c.flags("serve", "SERVICE tcp://HOST:PORT", "expose the TCP server at HOST:PORT as the roam service SERVICE")
	var hf hostFlags
	hf.register(set)
	connectTimeout := set.Duration("connect-timeout", 5*time.Second, "how long a connection to the target may take")
	if err := c.parse(set, args, 2); err != nil {
		return err
	}
	id, err := parseService(set.Arg(0))
	if err != nil {
		return err
	}
	target, err := parseTarget(set.Arg(1))
	if err != nil {
		return err
	}
	// Fail now, not at the first flow, if nothing listens there.
	d := net.Dialer{Timeout: *connectTimeout}
	probe, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return fmt.Errorf("target %s: %w", set.Arg(1), err)
	}
	probe.Close()

	s, err := c.newSession(ctx, &hf, true)
	if err != nil {
		return err
	}
	defer s.Close()
	l, err := s.host.ListenService(ctx, id)
	if err != nil {
		return err
	}
	keyID, _ := s.host.ServiceID("") // rk--<fingerprint>; a key-only ID cannot fail
	s.log.Info("serving", "service", id, "target", target, "udp", s.host.LocalAddr(), "key", s.keyPath, "id", keyID)
	fmt.Fprintf(c.stdout, "roam serve: %s on %s -> tcp://%s\n", id, s.host.LocalAddr(), target)

	flows := newFlowSet()
	for {
		fc, err := l.AcceptContext(ctx) // returns when ctx ends
		if err != nil {
			// Withdraw the registration before anything else, and wait
			// for it: the resolver closes when this returns.
			if cerr := l.Close(); cerr != nil {
				s.log.Warn("withdrawing the registration", "service", id, "err", cerr)
			}
			flows.closeAll()
			if ctx.Err() != nil {
				s.log.Info("stopped", "service", id)
				return nil
			}
			return err
		}
		flows.run(func() {
			tc, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				s.log.Warn("target refused a flow", "flow", fc.FlowID(), "err", err)
				fc.Close()
				return
			}
			n1, n2, err := splice(fc, tc.(*net.TCPConn))
			logSplice(s, fc, n1, n2, err)
		}, fc)
	}
}

func logSplice(s *session, fc *sal.Conn, fromFlow, toFlow int64, err error) {
	if ordinaryEnd(err) {
		s.log.Debug("flow ended", "flow", fc.FlowID(), "received", fromFlow, "sent", toFlow)
		return
	}
	s.log.Warn("flow ended", "flow", fc.FlowID(), "received", fromFlow, "sent", toFlow, "err", err)
}

// parseTarget reads tcp://HOST:PORT.
func parseTarget(arg string) (string, error) {
	u, err := url.Parse(arg)
	if err != nil {
		return "", usagef("target %q: %v", arg, err)
	}
	if u.Scheme != "tcp" {
		return "", usagef("target %q: want tcp://HOST:PORT", arg)
	}
	if u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return "", usagef("target %q: want tcp://HOST:PORT and nothing more", arg)
	}
	if u.Port() == "" || u.Hostname() == "" {
		return "", usagef("target %q: want tcp://HOST:PORT, with both", arg)
	}
	return u.Host, nil
}

// flowSet runs one goroutine per connection and closes those still open
// when the command stops.
type flowSet struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[io.Closer]struct{}
}

func newFlowSet() *flowSet { return &flowSet{conns: make(map[io.Closer]struct{})} }

func (fs *flowSet) run(f func(), fc io.Closer) {
	fs.mu.Lock()
	fs.conns[fc] = struct{}{}
	fs.mu.Unlock()
	fs.wg.Go(func() {
		defer func() {
			fs.mu.Lock()
			delete(fs.conns, fc)
			fs.mu.Unlock()
		}()
		f()
	})
}

// closeAll closes every flow and waits for their goroutines.
func (fs *flowSet) closeAll() {
	fs.mu.Lock()
	for fc := range fs.conns {
		fc.Close()
	}
	fs.mu.Unlock()
	fs.wg.Wait()
}
