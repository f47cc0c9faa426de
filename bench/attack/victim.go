package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// The victim runs in a process of its own, so that what the attack
// measures is the victim's heap and goroutines, not the attacker's.

// victimEnv, set in its environment, makes the binary (the command, or
// its test) run as the victim.
const victimEnv = "ROAM_ATTACK_VICTIM"

// victimService is the service the victim Host serves: an echo.
const victimService = "echo.attack"

// victimLine begins the line on which a victim process tells its parent
// its victimInfo.
const victimLine = "victim "

// victimInfo is what a victim process tells its parent.
type victimInfo struct {
	UDP   string `json:"udp"`   // the Host's address
	Key   string `json:"key"`   // the Host's key fingerprint
	Stats string `json:"stats"` // the URL of its stats
}

// victimStats is what the victim's stats URL answers.
type victimStats struct {
	LiveHeap   uint64 `json:"live_heap"` // bytes live after the last GC; after a forced one with ?gc=1
	Goroutines int    `json:"goroutines"`
	RSS        uint64 `json:"rss"`
	// PeakGoroutines is the most goroutines seen at once, looked at every
	// 5 ms: what the runtime keeps a descriptor of for good.
	PeakGoroutines int            `json:"peak_goroutines"`
	Limits         sal.LimitStats `json:"limits"`
}

// serveVictim runs a Host with the default Config serving an echo, and a
// stats endpoint, until its stdin closes.
func serveVictim(cfg sal.Config) error {
	cfg.Resolver = resolve.NewMemory()
	cfg.ListenAddr = "127.0.0.1:0"
	h, err := sal.NewHost(cfg)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.Listen(context.Background(), victimService)
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	var peak atomic.Int64
	go func() {
		for range time.Tick(5 * time.Millisecond) {
			if n := int64(runtime.NumGoroutine()); n > peak.Load() {
				peak.Store(n)
			}
		}
	}()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // to see what a victim holds
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		st := victimStats{Goroutines: runtime.NumGoroutine(), PeakGoroutines: int(peak.Load()), RSS: rss(), Limits: h.LimitStats()}
		if r.URL.Query().Get("gc") != "" {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			st.LiveHeap = ms.HeapAlloc
		} else {
			s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
			metrics.Read(s)
			st.LiveHeap = s[0].Value.Uint64()
		}
		json.NewEncoder(w).Encode(st)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(hl)
	defer srv.Close()
	info, _ := json.Marshal(victimInfo{UDP: h.LocalAddr().String(), Key: h.Key().String(), Stats: "http://" + hl.Addr().String()})
	fmt.Println(victimLine + string(info))
	io.Copy(io.Discard, bufio.NewReader(os.Stdin)) // until the parent goes
	return nil
}

// rss returns the process's resident set, from /proc (0 elsewhere).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident uint64
	fmt.Sscan(string(b), &size, &resident)
	return resident * uint64(os.Getpagesize())
}
