package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// runResolve: roam resolve SERVICE prints the resolver's answer.
func runResolve(c *cli, ctx context.Context, args []string) error {
	set := c.flags("resolve", "SERVICE", "print what the resolver answers for SERVICE")
	var hf hostFlags
	set.StringVar(&hf.resolver, "resolver", "", "resolver `URL` (default: $"+resolve.EnvResolver+")")
	timeout := set.Duration("timeout", 5*time.Second, "how long the lookup may take")
	if err := c.parse(set, args, 1); err != nil {
		return err
	}
	id, err := parseService(set.Arg(0))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, err := hf.openResolver(ctx)
	if err != nil {
		return err
	}
	if cl, ok := r.(io.Closer); ok {
		defer cl.Close()
	}
	eps, err := r.Resolve(ctx, id.LookupName())
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tKEY\tTTL\t")
	pin, pinned := id.Key()
	for _, ep := range eps {
		key := "(none pinned)"
		if !ep.Key.IsZero() {
			key = ep.Key.String()
		}
		if pinned && ep.Key != pin {
			key += " (not the ID's key: dials refuse it)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t\n", ep.Addr, key, ep.TTL)
	}
	return tw.Flush()
}

// runPing: roam ping SERVICE asks every endpoint whether it serves SERVICE.
func runPing(c *cli, ctx context.Context, args []string) error {
	set := c.flags("ping", "SERVICE", "ask every endpoint of SERVICE whether it serves it, with RTTs")
	var hf hostFlags
	hf.register(set)
	count := set.Int("c", 3, "pings per endpoint")
	timeout := set.Duration("timeout", 5*time.Second, "how long each endpoint may take to answer")
	if err := c.parse(set, args, 1); err != nil {
		return err
	}
	if *count < 1 {
		return usagef("-c %d: at least 1", *count)
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
	results, err := pingAll(ctx, s.host, id, *count, *timeout)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tSERVES\tRTT min / avg / max\t")
	var answered int
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(tw, "%s\tno\t%v\t\n", r.ep.Addr, r.err)
			continue
		}
		answered++
		fmt.Fprintf(tw, "%s\tyes\t%v / %v / %v\t\n", r.ep.Addr, r.min, r.avg, r.max)
	}
	tw.Flush()
	if answered == 0 {
		return fmt.Errorf("%s: none of %d endpoints serves it", id, len(results))
	}
	return nil
}

type pingResult struct {
	ep            resolve.Endpoint
	min, avg, max time.Duration
	err           error
}

// pingAll resolves id and pings each endpoint count times, all endpoints
// at once, each within timeout.
func pingAll(ctx context.Context, h *sal.Host, id sal.ServiceID, count int, timeout time.Duration) ([]pingResult, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	eps, err := h.Resolver().Resolve(rctx, id.LookupName())
	cancel()
	if err != nil {
		return nil, err // it names the service
	}
	results := make([]pingResult, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			r := pingResult{ep: ep}
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			var sum time.Duration
			for k := range count {
				rtt, err := h.Ping(pctx, id.String(), ep)
				if err != nil {
					r.err = err
					break
				}
				sum += rtt
				if k == 0 || rtt < r.min {
					r.min = rtt
				}
				r.max = max(r.max, rtt)
				r.avg = sum / time.Duration(k+1)
			}
			results[i] = r
		})
	}
	wg.Wait()
	return results, nil
}

// checkServed fails unless some endpoint of id answers that it serves
// it: a command that forwards to a service nobody serves says so at once.
func checkServed(ctx context.Context, h *sal.Host, id sal.ServiceID, timeout time.Duration) error {
	results, err := pingAll(ctx, h, id, 1, timeout)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range results {
		if r.err == nil {
			return nil
		}
		errs = append(errs, r.err)
	}
	return fmt.Errorf("%s: no endpoint serves it: %w", id, errors.Join(errs...))
}
