// Command soak holds many flows open to one listening Host: it opens them
// in waves from several client Hosts, moves every client once (a Rebind
// to a new address, as a fleet changing networks), checks that every flow
// still carries its bytes, closes them all, and checks that memory and
// goroutines return to where they were before the first flow.
//
//	go run ./bench/soak                 # 100,000 flows
//	go run ./bench/soak -flows 10000    # a quicker look
//
// It prints the live heap and goroutines at each step, the heap per flow
// (both ends: clients and server are in this one process), and the stall
// of a sample of flows through the move. It exits 1 if a flow fails or if
// the process does not return to its baseline.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

func main() {
	flows := flag.Int("flows", 100_000, "flows to hold open")
	clients := flag.Int("clients", 25, "client Hosts the flows are spread over, each on its own loopback address")
	wave := flag.Int("wave", 10_000, "flows opened per wave")
	sample := flag.Int("sample", 1000, "flows whose stall through the move is measured")
	flag.StringVar(&heapProfile, "heapprofile", "", "write a heap profile here once all flows are closed")
	flag.Parse()
	if *clients < 1 || *clients > 200 || *flows < *clients || *wave < 1 || *sample < 1 {
		fmt.Fprintln(os.Stderr, "soak: need 1 <= -clients <= 200, -flows >= -clients, -wave >= 1, -sample >= 1")
		os.Exit(2)
	}
	if err := run(*flows, *clients, *wave, min(*sample, *flows)); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

var heapProfile string

// snapshot is the process's live heap, after a collection, and goroutines.
type snapshot struct {
	heap       uint64
	goroutines int
}

func measure() snapshot {
	// Let timers and the goroutines of closed connections finish first.
	time.Sleep(500 * time.Millisecond)
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return snapshot{heap: ms.HeapAlloc, goroutines: runtime.NumGoroutine()}
}

// within reports whether s is back at base: the same goroutines, and a
// heap at most 10% + 16 MiB above it (maps keep the buckets they grew to
// for 100,000 flows).
func (s snapshot) within(base snapshot) bool {
	return s.goroutines <= base.goroutines && s.heap <= base.heap+base.heap/10+16<<20
}

func (s snapshot) String() string {
	return fmt.Sprintf("heap %.1f MiB, %d goroutines", float64(s.heap)/(1<<20), s.goroutines)
}

// pair is one flow: the dialed end and the accepted one.
type pair struct{ client, server *sal.Conn }

func run(flows, clients, wave, sample int) error {
	ctx := context.Background()
	mem := resolve.NewMemory()
	perClient := (flows + clients - 1) / clients
	// Short idle timeouts, so that once the flows are closed their
	// connections go too, and the process can be back at its baseline.
	server, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0", MaxFlowsPerConn: perClient + 64, Backlog: 4096,
		InboundIdleTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer server.Close()
	l, err := server.Listen(ctx, "soak.demo")
	if err != nil {
		return err
	}
	hosts := make([]*sal.Host, clients)
	for i := range hosts {
		// Each client on its own loopback address, as the devices of a
		// fleet are; it moves to another one later.
		if hosts[i], err = sal.NewHost(sal.Config{Resolver: mem, ListenAddr: fmt.Sprintf("127.0.1.%d:0", i+1), MaxFlowsPerConn: perClient + 64,
			IdleConnTimeout: time.Second}); err != nil {
			return err
		}
		defer hosts[i].Close()
	}
	// Warm up: a flow from each client, closed, so that what each Host
	// starts on first use (its sockets' goroutines, its resolver's watch
	// of the service) is in the baseline, and what the flows leave is not.
	for _, h := range hosts {
		c, err := h.Dial(ctx, "soak.demo")
		if err != nil {
			return err
		}
		s, err := l.AcceptContext(ctx)
		if err != nil {
			return err
		}
		c.Close()
		s.Close()
	}
	time.Sleep(4 * time.Second) // their connections close as idle
	base := measure()
	fmt.Printf("baseline (server and %d client Hosts up, no flow): %v\n", clients, base)

	// Accepted flows say which flow they are in their first 8 bytes.
	pairs := make([]pair, flows)
	var acceptWG sync.WaitGroup
	accepted := make(chan struct{}, flows)
	acceptWG.Go(func() {
		for {
			c, err := l.AcceptContext(ctx)
			if err != nil {
				return
			}
			acceptWG.Go(func() {
				var id [8]byte
				if _, err := io.ReadFull(c, id[:]); err != nil {
					c.Close()
					return
				}
				pairs[binary.BigEndian.Uint64(id[:])].server = c
				accepted <- struct{}{}
			})
		}
	})

	start := time.Now()
	for from := 0; from < flows; from += wave {
		to := min(from+wave, flows)
		t := time.Now()
		if err := parallel(to-from, 64, func(k int) error {
			i := from + k
			c, err := hosts[i%clients].Dial(ctx, "soak.demo")
			if err != nil {
				return fmt.Errorf("dial of flow %d: %w", i, err)
			}
			pairs[i].client = c
			var id [8]byte
			binary.BigEndian.PutUint64(id[:], uint64(i))
			_, err = c.Write(id[:])
			return err
		}); err != nil {
			return err
		}
		for range to - from {
			<-accepted
		}
		fmt.Printf("wave %d: flows %d..%d open in %v\n", from/wave+1, from, to-1, time.Since(t).Round(time.Millisecond))
	}
	fmt.Printf("%d flows open in %v\n", flows, time.Since(start).Round(time.Millisecond))
	if err := exchangeAll(pairs, 0); err != nil {
		return err
	}
	peak := measure()
	fmt.Printf("all open, one round trip each: %v; %.2f KiB per flow, both ends\n",
		peak, float64(int64(peak.heap)-int64(base.heap))/float64(flows)/1024)

	// The move: every client rebinds to a new address at once, while the
	// sample's flows keep asking for echoes; each sampled flow's stall is
	// the time from the move to its first echo after it.
	stalls, err := moveAll(ctx, hosts, pairs[:sample])
	if err != nil {
		return err
	}
	slices.Sort(stalls)
	fmt.Printf("move of %d clients: stall of %d sampled flows p50 %v, p99 %v, max %v\n", clients, sample,
		stalls[len(stalls)/2].Round(time.Millisecond), stalls[len(stalls)*99/100].Round(time.Millisecond), stalls[len(stalls)-1].Round(time.Millisecond))
	if err := exchangeAll(pairs, 1); err != nil {
		return fmt.Errorf("after the move: %w", err)
	}
	moved := measure()
	fmt.Printf("after the move, one more round trip each: %v\n", moved)

	for _, p := range pairs {
		p.client.Close()
		p.server.Close()
	}
	l.Close()
	acceptWG.Wait()
	// The connections, idle now, close within their idle timeouts. A
	// closed flow whose FIN the peer never acknowledged goes on trying to
	// deliver it for up to ResumeTimeout (60 s), so the wait allows that.
	closedAt := time.Now()
	time.Sleep(4 * time.Second)
	after := measure()
	for !after.within(base) && time.Since(closedAt) < 75*time.Second {
		time.Sleep(time.Second)
		after = measure()
	}
	fmt.Printf("all closed: %v, %v after the close\n", after, time.Since(closedAt).Round(100*time.Millisecond))
	if heapProfile != "" {
		f, err := os.Create(heapProfile)
		if err != nil {
			return err
		}
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	var errs []error
	if after.goroutines > base.goroutines {
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1) // what is left, for whoever reads the failure
		errs = append(errs, fmt.Errorf("%d goroutines left, against %d before the flows", after.goroutines, base.goroutines))
	}
	if after.heap > base.heap+base.heap/10+16<<20 {
		errs = append(errs, fmt.Errorf("live heap %.1f MiB, against %.1f MiB before the flows", float64(after.heap)/(1<<20), float64(base.heap)/(1<<20)))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Println("back to baseline: ok")
	return nil
}

// exchangeAll sends one byte each way on every flow and checks it; round
// says which, so that a byte from an earlier round cannot pass for it.
func exchangeAll(pairs []pair, round byte) error {
	return parallel(len(pairs), 64, func(i int) error {
		p := pairs[i]
		want := byte(i) ^ round
		var b [1]byte
		for _, step := range []struct{ w, r *sal.Conn }{{p.client, p.server}, {p.server, p.client}} {
			if _, err := step.w.Write([]byte{want}); err != nil {
				return fmt.Errorf("flow %d: write: %w", i, err)
			}
			step.r.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadFull(step.r, b[:]); err != nil {
				return fmt.Errorf("flow %d: read: %w", i, err)
			}
			if b[0] != want {
				return fmt.Errorf("flow %d: read %#x, want %#x", i, b[0], want)
			}
		}
		return nil
	})
}

// moveAll rebinds every client Host to a new loopback address while each
// flow of sample echoes a counter, and returns each sampled flow's stall:
// the time from the start of the move to its first echo after it.
func moveAll(ctx context.Context, hosts []*sal.Host, sample []pair) ([]time.Duration, error) {
	var moveStart atomic.Int64 // unix nanoseconds; 0 until the move begins
	stalls := make([]atomic.Int64, len(sample))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(sample))
	for i, p := range sample {
		wg.Go(func() { // the server end echoes
			var b [4]byte
			for {
				p.server.SetReadDeadline(time.Now().Add(90 * time.Second))
				if _, err := io.ReadFull(p.server, b[:]); err != nil {
					errs <- fmt.Errorf("sampled flow %d, server: %w", i, err)
					return
				}
				if _, err := p.server.Write(b[:]); err != nil {
					errs <- fmt.Errorf("sampled flow %d, server: %w", i, err)
					return
				}
				if binary.BigEndian.Uint32(b[:]) == 0 {
					return // the last round
				}
			}
		})
		wg.Go(func() {
			var b [4]byte
			for n := uint32(1); ; n++ {
				select {
				case <-stop:
					n = 0 // tells the echo to end
				default:
				}
				binary.BigEndian.PutUint32(b[:], n)
				if _, err := p.client.Write(b[:]); err != nil {
					errs <- fmt.Errorf("sampled flow %d, client: %w", i, err)
					return
				}
				p.client.SetReadDeadline(time.Now().Add(90 * time.Second))
				if _, err := io.ReadFull(p.client, b[:]); err != nil || binary.BigEndian.Uint32(b[:]) != n {
					errs <- fmt.Errorf("sampled flow %d, client: echo %d of %d: %v", i, binary.BigEndian.Uint32(b[:]), n, err)
					return
				}
				if at := moveStart.Load(); at != 0 && stalls[i].Load() == 0 {
					stalls[i].Store(int64(time.Since(time.Unix(0, at))))
				}
				if n == 0 {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // the echoes under way
	moveStart.Store(time.Now().UnixNano())
	err := parallel(len(hosts), len(hosts), func(i int) error {
		return hosts[i].Rebind(ctx, fmt.Sprintf("127.0.2.%d:0", i+1))
	})
	// Every sampled flow has its stall once it echoed after the move.
	for deadline := time.Now().Add(time.Minute); err == nil; {
		done := true
		for i := range stalls {
			done = done && stalls[i].Load() != 0
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			err = errors.New("sampled flows still stalled a minute after the move")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		err = errors.Join(err, e)
	}
	out := make([]time.Duration, len(stalls))
	for i := range stalls {
		out[i] = time.Duration(stalls[i].Load())
	}
	return out, err
}

// parallel runs f(0..n-1), width at a time, and returns the first error.
func parallel(n, width int, f func(i int) error) error {
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	var first error
	var mu sync.Mutex
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}
