package main

import (
	"context"
	"io"
	"time"
)

// runDial: roam dial SERVICE carries stdin and stdout as one flow, like
// nc: stdin's end half-closes the flow, and the command ends when the
// peer's side ends. It logs only warnings unless -v, since stderr is
// often a program's own (ssh's ProxyCommand).
func runDial(c *cli, ctx context.Context, args []string) error {
	set := c.flags("dial", "SERVICE", "carry stdin and stdout as one flow to SERVICE")
	var hf hostFlags
	hf.register(set)
	timeout := set.Duration("timeout", 10*time.Second, "how long the dial may take")
	if err := c.parse(set, args, 1); err != nil {
		return err
	}
	id, err := parseService(set.Arg(0))
	if err != nil {
		return err
	}
	s, err := c.newSession(ctx, &hf, false)
	if err != nil {
		return err
	}
	defer s.Close()
	dctx, cancel := context.WithTimeout(ctx, *timeout)
	fc, err := s.host.DialService(dctx, id)
	cancel()
	if err != nil {
		return err
	}
	defer fc.Close()
	stop := context.AfterFunc(ctx, func() { fc.Close() })
	defer stop()

	// stdin may block in a read the flow's end cannot stop (a terminal,
	// a pipe nobody closes): it is not waited for.
	go func() {
		if _, err := pump(fc, c.stdin); err == nil {
			fc.CloseWrite()
		}
	}()
	_, err = pump(c.stdout, fc)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil && err != io.EOF {
		return err
	}
	return nil
}
