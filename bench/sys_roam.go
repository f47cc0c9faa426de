package main

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/mobility/emu"
	"github.com/roamnet/roam/mobility/trace"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// roamLane carries the flows on roam: a client Host dials the service,
// whose Host sits behind a relay. At a handover the client Host Rebinds
// to a new address, as its Monitor would; everything else roam does by
// itself. Each flow opens with its index (8 bytes), so the listener knows
// which record it feeds; the pattern follows.
type roamLane struct {
	dead   emu.DeadAddrs
	socks  relayedUDP
	server *sal.Host
	client *sal.Host
	wg     sync.WaitGroup

	appErrors atomic.Int64
	resumes   atomic.Int64
}

func (l *roamLane) start(ctx context.Context, env *laneEnv) error {
	l.socks = relayedUDP{link: emu.LinkConfigOf(env.link), hook: l.dead.Hook, seed: env.seed}
	mem := resolve.NewMemory()
	var err error
	l.server, err = sal.NewHost(sal.Config{Resolver: mem, ListenAddr: addrString(blockServer), ListenPacket: l.socks.ListenPacket})
	if err != nil {
		return err
	}
	l.client, err = sal.NewHost(sal.Config{Resolver: mem, ListenAddr: addrString(blockClient), OnEvent: func(e sal.Event) {
		if e.Kind == sal.EventResumed {
			l.resumes.Add(1)
		}
	}})
	if err != nil {
		return err
	}
	return runRoamFlows(ctx, env, l.server, l.client, &l.wg, &l.appErrors)
}

// receiveFlow feeds what a roam flow carries to the record its first 8
// bytes name, and counts an error that is not the flow's end.
// runRoamFlows listens on the service at server, feeds each accepted flow
// to its record, and dials env's flows from client, each opening with its
// index (8 bytes) and then sending its pattern; a complete transfer keeps
// its flow open to the end. Every goroutine is counted by wg.
func runRoamFlows(ctx context.Context, env *laneEnv, server, client *sal.Host, wg *sync.WaitGroup, appErrors *atomic.Int64) error {
	ln, err := server.Listen(ctx, service)
	if err != nil {
		return err
	}
	wg.Go(func() {
		for {
			c, err := ln.AcceptContext(ctx)
			if err != nil {
				return
			}
			wg.Go(func() { receiveFlow(ctx, c, env.records, appErrors) })
		}
	})
	return dialAll(ctx, len(env.senders), func(i int) error {
		c, err := client.Dial(ctx, service)
		if err != nil {
			return err
		}
		var id [8]byte
		binary.BigEndian.PutUint64(id[:], uint64(i))
		if _, err := c.Write(id[:]); err != nil {
			c.Close()
			return err
		}
		wg.Go(func() {
			defer c.Close()
			if _, err := env.senders[i].send(ctx, c, 0); err != nil && ctx.Err() == nil {
				appErrors.Add(1)
			}
			if ctx.Err() == nil {
				<-ctx.Done()
			}
		})
		return nil
	})
}

func receiveFlow(ctx context.Context, c *sal.Conn, records []*flowRecord, appErrors *atomic.Int64) {
	defer c.Close()
	var id [8]byte
	if _, err := io.ReadFull(c, id[:]); err != nil {
		return
	}
	i := binary.BigEndian.Uint64(id[:])
	if i >= uint64(len(records)) {
		return
	}
	err := feedAll(c, records[i].feed)
	if ctx.Err() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		appErrors.Add(1)
	}
}

// dialAll runs dial for 0..n-1, 32 at a time, and returns the first error.
func dialAll(ctx context.Context, n int, dial func(i int) error) error {
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs <- dial(i)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (l *roamLane) setLink(lk trace.Link)    { l.socks.current().SetLink(lk) }
func (l *roamLane) blackout(d time.Duration) { l.socks.current().Blackout(d) }
func (l *roamLane) rebind()                  { l.socks.current().Rebind() }

func (l *roamLane) handover(ctx context.Context, outage time.Duration) {
	r := l.socks.current()
	old := l.client.LocalAddr()
	mapped, _ := r.Mapping(old)
	l.dead.Kill(old, mapped)
	r.Handover(outage)
	l.wg.Go(func() {
		// As the Host's Monitor does: no deadline, so roam bounds the
		// probes itself (2 x Config.EndpointTimeout) before it resumes.
		afterOutage(ctx, outage, func() { l.client.Rebind(ctx, addrString(blockClient)) })
	})
}

func (l *roamLane) moveServer(ctx context.Context) {
	r := l.socks.current()
	if r.MoveServer() == nil {
		l.server.SetAdvertiseAddr(ctx, r.ServerAddr())
	}
}

func (l *roamLane) counts() laneCounts {
	return laneCounts{appErrors: l.appErrors.Load(), resumes: l.resumes.Load()}
}

func (l *roamLane) close() {
	if l.client != nil {
		l.client.Close()
	}
	if l.server != nil {
		l.server.Close()
	}
	l.wg.Wait()
	l.socks.Close()
}

func (l *roamLane) sentBytes() uint64 { return l.socks.offered() }
