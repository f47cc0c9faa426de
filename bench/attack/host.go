package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// The host target: a sal Host with the default Config serving an echo, in
// a process of its own (this binary, with ROAM_ATTACK_VICTIM set), beside
// an honest client that echoes 256 KiB flows over one connection, checked
// by SHA-256, and every eighth round dials from a new Host (a handshake).

type hostTarget struct{}

// hostBuffer is sal.Config.HostBuffer's default, which the victim runs
// with: the attacks on its memory must keep its live heap under twice it.
const hostBuffer = 512 << 20

func (hostTarget) attacks(o *options) []attack {
	return []attack{
		{name: "no-acks", run: attackNoAcks, maxHeap: 2 * hostBuffer,
			about: "72 flows of 8 MiB each to the echo from one connection, whose echoes the attacker reads at the QUIC level and never acknowledges"},
		{name: "flows", run: attackFlowFlood, maxHeap: 2 * hostBuffer,
			about: "12,000 flows of one byte each on one connection, never acknowledged (MaxFlowsPerConn refuses past 4,096)"},
		{name: "initials", handshakeFlood: true, run: attackInitials,
			about: "spoofable QUIC Initials (random connection IDs, undecryptable payload) at 10k/s (5k/s with -quick); past 32 handshakes in progress the Host answers with stateless Retries"},
		{name: "junk", handshakeFlood: true, run: attackJunk,
			about: "random datagrams at 30k/s, half of them with a QUIC long header"},
		{name: "idle-conns", handshakeFlood: true, run: attackIdleConns,
			about: "2,000 connections from the honest client's address, each under a fresh key, held idle"},
	}
}

// hostVictim is a victim Host's process and the honest client.
type hostVictim struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}
	info   victimInfo
	addr   netip.AddrPort
	id     sal.ServiceID // the victim's service, pinned to its key
	client *sal.Host
	rounds atomic.Int64
}

func (hostTarget) start(ctx context.Context, o *options) (victim, error) {
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), victimEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe() // the victim lives until it closes
	if err != nil {
		return nil, err
	}
	lines, exited, err := startProcess(cmd, victimLine)
	if err != nil {
		return nil, err
	}
	v := &hostVictim{cmd: cmd, stdin: stdin, exited: exited}
	err = json.Unmarshal([]byte(lines[0]), &v.info)
	if err == nil {
		v.addr, err = netip.ParseAddrPort(v.info.UDP)
	}
	var key resolve.Fingerprint
	if err == nil {
		key, err = resolve.ParseFingerprint(v.info.Key)
	}
	if err == nil {
		v.id, err = sal.NewServiceID(victimService, key)
	}
	if err == nil {
		v.client, err = v.newClient()
	}
	if err != nil {
		v.close()
		return nil, fmt.Errorf("victim: %w", err)
	}
	return v, nil
}

func (v *hostVictim) close() error {
	if v.client != nil {
		v.client.Close()
	}
	v.stdin.Close()
	select {
	case <-v.exited:
	case <-time.After(5 * time.Second):
		v.cmd.Process.Kill()
		<-v.exited
	}
	return nil
}

// newClient returns an honest Host that finds the victim by a table rule.
func (v *hostVictim) newClient() (*sal.Host, error) {
	h, err := sal.NewHost(sal.Config{Resolver: resolve.NewMemory(), ListenAddr: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	key, _ := v.id.Key()
	err = h.Table().Set(sal.Rule{Service: v.id.String(), Action: sal.ActionEndpoints,
		Endpoints: []resolve.Endpoint{{Addr: v.addr, Key: key}}})
	if err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// honest echoes 256 KiB over the honest client's connection, or, every
// eighth round, 1 KiB from a new Host, which needs a handshake.
func (v *hostVictim) honest(ctx context.Context) error {
	if v.rounds.Add(1)%8 == 0 {
		fresh, err := v.newClient()
		if err != nil {
			return err
		}
		defer fresh.Close()
		return echo(ctx, fresh, v.id, 1<<10)
	}
	return echo(ctx, v.client, v.id, 256<<10)
}

// echo sends n random bytes to id and checks that they all come back.
func echo(ctx context.Context, h *sal.Host, id sal.ServiceID, n int) error {
	c, err := h.DialService(ctx, id)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	data := make([]byte, n)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	sum := sha256.New()
	got, err := io.Copy(sum, c)
	if err == nil {
		err = <-werr
	}
	if err != nil {
		return err
	}
	if got != int64(n) || [32]byte(sum.Sum(nil)) != sha256.Sum256(data) {
		return errors.New("echo corrupted")
	}
	return nil
}

func (v *hostVictim) stats(ctx context.Context, collect bool) (victimStats, error) {
	url := v.info.Stats
	if collect {
		url += "?gc=1"
	}
	var st victimStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

func (v *hostVictim) sample(ctx context.Context, collect bool) (sample, error) {
	st, err := v.stats(ctx, collect)
	return sample{goroutines: st.Goroutines, peakGoroutines: st.PeakGoroutines, heapLive: st.LiveHeap, rss: st.RSS}, err
}

func (v *hostVictim) refusals(ctx context.Context) (map[string]uint64, error) {
	st, err := v.stats(ctx, false)
	l := st.Limits
	return map[string]uint64{
		"flows/conn": l.FlowsRefused, "conns/addr": l.ConnsRefusedAddr, "conns evicted": l.ConnsEvicted,
		"handshakes": l.HandshakesRefused, "retries": l.Retries, "flows stalled": l.FlowsStalled,
		"idle conns closed": l.ConnsIdleClosed, "buffer waits": l.BufferWaits,
	}, err
}

// onRawConn dials the victim as a new peer and runs attack on the
// connection; once ctx ends, it closes the connection, with a
// CONNECTION_CLOSE, and waits for the goroutines attack started in wg.
func onRawConn(ctx context.Context, victim netip.AddrPort, conf *quic.Config, attack func(qc *quic.Conn, wg *sync.WaitGroup)) error {
	tr, qc, err := rawDial(ctx, victim, conf)
	if err != nil {
		return err
	}
	defer tr.Close()
	var wg sync.WaitGroup
	attack(qc, &wg)
	<-ctx.Done()
	qc.CloseWithError(0, "attack over")
	wg.Wait()
	return nil
}

func attackNoAcks(ctx context.Context, v victim, o *options) (outcome, error) {
	var sent, read atomic.Int64
	err := onRawConn(ctx, v.(*hostVictim).addr, &quic.Config{KeepAlivePeriod: time.Second}, func(qc *quic.Conn, wg *sync.WaitGroup) {
		for range 72 {
			s, err := qc.OpenStreamSync(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				buf := make([]byte, 64<<10)
				s.Write(openHeader(victimService))
				for i := 0; i < 128 && ctx.Err() == nil; i++ {
					n, err := s.Write(buf)
					sent.Add(int64(n))
					if err != nil {
						return
					}
				}
			})
			wg.Go(func() {
				readReplyStatus(s)
				n, _ := io.Copy(io.Discard, s)
				read.Add(n)
			})
		}
	})
	return outcome{did: fmt.Sprintf("sent %d MiB, read %d MiB unacknowledged", sent.Load()>>20, read.Load()>>20)}, err
}

func attackFlowFlood(ctx context.Context, v victim, o *options) (outcome, error) {
	var ok, refused atomic.Int64
	opened := 0
	conf := &quic.Config{KeepAlivePeriod: time.Second, MaxIncomingStreams: 1 << 14}
	err := onRawConn(ctx, v.(*hostVictim).addr, conf, func(qc *quic.Conn, wg *sync.WaitGroup) {
		for ; opened < 12000 && ctx.Err() == nil; opened++ {
			s, err := qc.OpenStreamSync(ctx)
			if err != nil {
				return
			}
			s.Write(append(openHeader(victimService), 'x'))
			wg.Go(func() {
				st, err := readReplyStatus(s)
				switch {
				case err != nil:
				case st == 0:
					ok.Add(1)
					io.Copy(io.Discard, s)
				default:
					refused.Add(1)
				}
			})
		}
	})
	out := outcome{did: fmt.Sprintf("%d flows opened, %d accepted, %d refused", opened, ok.Load(), refused.Load())}
	if ok.Load() > 4096 {
		out.missed = "more than MaxFlowsPerConn (4,096) flows accepted on one connection"
	}
	return out, err
}

// initialRate is how many fake Initials per second attackInitials sends:
// about the rate of the measurement in issue 13 (9.8k/s).
const initialRate = 10000

// attackInitials floods the victim with QUIC Initials that no one will
// ever answer, as from spoofed addresses: each has a new connection ID
// and a payload of noise, which costs the sender nothing, and the receiver
// a connection until its handshake times out unless it asks for a Retry.
func attackInitials(ctx context.Context, v victim, o *options) (outcome, error) {
	did, err := sendPackets(ctx, v.(*hostVictim).addr, pick(o.quick, initialRate/2, initialRate), 16, func(b []byte) []byte {
		return fakeInitial(b[:0])
	}, "Initials")
	return outcome{did: did}, err
}

func attackJunk(ctx context.Context, v victim, o *options) (outcome, error) {
	did, err := sendJunk(ctx, v.(*hostVictim).addr)
	return outcome{did: did}, err
}

// fakeInitial appends a 1200-byte QUIC v1 Initial with random connection
// IDs and a payload of noise.
func fakeInitial(b []byte) []byte {
	var ids [16]byte
	rand.Read(ids[:])
	b = append(b, 0xc3, 0, 0, 0, 1, 8)
	b = append(b, ids[:8]...)
	b = append(b, 8)
	b = append(b, ids[8:]...)
	b = append(b, 0) // no token
	rest := 1200 - len(b) - 2
	b = append(b, 0x40|byte(rest>>8), byte(rest))
	noise := make([]byte, rest)
	rand.Read(noise)
	return append(b, noise...)
}

// sendPackets sends what next makes, rate a second from senders sockets,
// until ctx ends, and says how many it sent a second.
func sendPackets(ctx context.Context, victim netip.AddrPort, rate, senders int, next func([]byte) []byte, what string) (string, error) {
	var sent atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range senders {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		wg.Go(func() {
			defer pc.Close()
			to := net.UDPAddrFromAddrPort(victim)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			perTick := max(1, rate/senders/100)
			b := make([]byte, 0, 1500)
			for ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
				for range perTick {
					b = next(b[:0])
					if _, err := pc.WriteTo(b, to); err == nil {
						sent.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	return fmt.Sprintf("%.0f %s/s", float64(sent.Load())/time.Since(start).Seconds(), what), nil
}

// junkRate is how many random datagrams per second attackJunk sends:
// about the rate of the measurement in issue 13 (26.6k/s).
const junkRate = 30000

// sendJunk sends random datagrams at junkRate, half of them with a QUIC
// long header, until ctx ends.
func sendJunk(ctx context.Context, victim netip.AddrPort) (string, error) {
	var n atomic.Int64
	return sendPackets(ctx, victim, junkRate, 4, func(b []byte) []byte {
		b = b[:1200]
		rand.Read(b)
		if n.Add(1)%2 == 0 {
			b[0] = 0xc0 | b[0]&0x3f
		}
		return b
	}, "datagrams")
}

// attackIdleConns opens 2,000 connections, each under a fresh key, from
// the honest client's address, and holds them idle.
func attackIdleConns(ctx context.Context, v victim, o *options) (outcome, error) {
	var trs []*quic.Transport
	var qcs []*quic.Conn
	defer func() {
		for _, tr := range trs {
			tr.Close()
		}
	}()
	for len(trs) < 2000 && ctx.Err() == nil {
		tr, qc, err := rawDial(ctx, v.(*hostVictim).addr, &quic.Config{KeepAlivePeriod: time.Second})
		if err != nil {
			continue
		}
		trs, qcs = append(trs, tr), append(qcs, qc)
	}
	<-ctx.Done()
	closed := 0
	for _, qc := range qcs {
		if qc.Context().Err() != nil {
			closed++
		}
		qc.CloseWithError(0, "attack over")
	}
	return outcome{did: fmt.Sprintf("%d connections opened, %d closed by the victim", len(qcs), closed)}, nil
}
