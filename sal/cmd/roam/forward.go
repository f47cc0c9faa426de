package main

import (
	"context"
	"fmt"
	"net"
	"time"
)

// runForward: roam forward [-listen ADDR] SERVICE. Every TCP connection
// to ADDR becomes a flow to SERVICE: this is the TCP translator. Its TCP
// leg stays on this machine, so no move of either end breaks it.
func runForward(c *cli, ctx context.Context, args []string) error {
	set := c.flags("forward", "SERVICE", "accept TCP connections on a local port and carry each as a flow to SERVICE")
	var hf hostFlags
	hf.register(set)
	listen := set.String("listen", "127.0.0.1:0", "TCP `address` to accept connections on")
	check := set.Bool("check", true, "check at start that some endpoint serves SERVICE")
	timeout := set.Duration("timeout", 10*time.Second, "how long the start check and each flow's dial may take")
	if err := c.parse(set, args, 1); err != nil {
		return err
	}
	id, err := parseService(set.Arg(0))
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()

	s, err := c.newSession(ctx, &hf, true)
	if err != nil {
		return err
	}
	defer s.Close()
	if *check {
		if err := checkServed(ctx, s.host, id, *timeout); err != nil {
			return err
		}
	}
	s.log.Info("forwarding", "listen", ln.Addr(), "service", id, "udp", s.host.LocalAddr())
	fmt.Fprintf(c.stdout, "roam forward: %s -> %s\n", ln.Addr(), id)

	conns := newFlowSet()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		tc, err := ln.Accept()
		if err != nil {
			conns.closeAll()
			if ctx.Err() != nil {
				s.log.Info("stopped", "listen", ln.Addr())
				return nil
			}
			return err
		}
		conns.run(func() {
			dctx, cancel := context.WithTimeout(ctx, *timeout)
			fc, err := s.host.DialService(dctx, id)
			cancel()
			if err != nil {
				s.log.Warn("dial failed", "service", id, "from", tc.RemoteAddr(), "err", err)
				tc.(*net.TCPConn).SetLinger(0) // a reset: the program sees a failure, not an empty answer
				tc.Close()
				return
			}
			n1, n2, err := splice(fc, tc.(*net.TCPConn))
			logSplice(s, fc, n1, n2, err)
		}, tc)
	}
}
