package main

import (
	"bufio"
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

// hostBed is a victim Host in a child process and an honest client beside
// the attacker.
type hostBed struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	info  victimInfo
	addr  netip.AddrPort
	id    sal.ServiceID // the victim's service, pinned to its key
}

func startVictim() (*hostBed, error) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), victimEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &hostBed{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &b.info)
	}
	if err == nil {
		b.addr, err = netip.ParseAddrPort(b.info.UDP)
	}
	var key resolve.Fingerprint
	if err == nil {
		key, err = resolve.ParseFingerprint(b.info.Key)
	}
	if err == nil {
		b.id, err = sal.NewServiceID(victimService, key)
	}
	if err != nil {
		b.stop()
		return nil, fmt.Errorf("victim: %w", err)
	}
	return b, nil
}

func (b *hostBed) stop() {
	b.stdin.Close()
	b.cmd.Wait()
}

// stats asks the victim for its heap and goroutines; gc forces a
// collection first, for the live heap exactly.
func (b *hostBed) stats(gc bool) (victimStats, error) {
	url := b.info.Stats
	if gc {
		url += "?gc=1"
	}
	resp, err := http.Get(url)
	if err != nil {
		return victimStats{}, err
	}
	defer resp.Body.Close()
	var st victimStats
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

// newClient returns an honest Host that finds the victim by a table rule.
func (b *hostBed) newClient() (*sal.Host, error) {
	h, err := sal.NewHost(sal.Config{Resolver: resolve.NewMemory(), ListenAddr: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	key, _ := b.id.Key()
	err = h.Table().Set(sal.Rule{Service: b.id.String(), Action: sal.ActionEndpoints,
		Endpoints: []resolve.Endpoint{{Addr: b.addr, Key: key}}})
	if err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// honestStats is what the honest client saw.
type honestStats struct {
	bytes              atomic.Int64 // echoed and checked
	echoes, failed     atomic.Int64
	freshOK, freshFail atomic.Int64 // dials on a new connection (a handshake each)
	lastErr            atomic.Pointer[string]
}

func (s *honestStats) fail(err error) {
	s.failed.Add(1)
	msg := err.Error()
	s.lastErr.Store(&msg)
}

// echoSize is what each honest echo sends and checks.
const echoSize = 1 << 20

// honest echoes echoSize bytes again and again over client until ctx
// ends, each checked by SHA-256, and every 500 ms dials from a new Host
// (a new handshake) for a small echo.
func (b *hostBed) honest(ctx context.Context, client *sal.Host, st *honestStats) {
	end, _ := ctx.Deadline()
	over := func() bool { return ctx.Err() != nil || !time.Now().Before(end) }
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			fresh, err := b.newClient()
			if err == nil {
				err = echo(ctx, fresh, b.id, 1024)
				fresh.Close()
			}
			switch {
			case over():
				return
			case err != nil:
				st.freshFail.Add(1)
				st.fail(err)
			default:
				st.freshOK.Add(1)
			}
		}
	})
	for !over() {
		err := echo(ctx, client, b.id, echoSize)
		switch {
		case over(): // (an echo the end of the phase cut short does not count)
			return
		case err != nil:
			st.fail(err)
			time.Sleep(50 * time.Millisecond)
		default:
			st.echoes.Add(1)
			st.bytes.Add(echoSize)
		}
	}
}

// echo sends n random bytes to id and checks that they all come back.
func echo(ctx context.Context, h *sal.Host, id sal.ServiceID, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
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

// A hostAttack runs until ctx ends, then takes everything it opened down,
// and returns a note on what it did.
type hostAttack struct {
	name  string
	flood bool // a handshake flood: the honest target is 25% of calm, not 50%
	run   func(ctx context.Context, victim netip.AddrPort) (string, error)
}

var hostAttacks = []hostAttack{
	{name: "no acks, 72 flows x 8 MiB", run: attackNoAcks},
	{name: "12,000 flows x 1 byte", run: attackFlowFlood},
	{name: "spoofed Initials", flood: true, run: attackInitials},
	{name: "random UDP", flood: true, run: attackJunk},
	{name: "2,000 idle connections", flood: true, run: attackConns},
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

// attackNoAcks opens 72 flows to the echo and sends 8 MiB on each; it
// reads the echoes at the QUIC level but never acknowledges them.
func attackNoAcks(ctx context.Context, victim netip.AddrPort) (string, error) {
	var sent, read atomic.Int64
	err := onRawConn(ctx, victim, &quic.Config{KeepAlivePeriod: time.Second}, func(qc *quic.Conn, wg *sync.WaitGroup) {
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
	return fmt.Sprintf("sent %d MiB, read %d MiB unacknowledged", sent.Load()>>20, read.Load()>>20), err
}

// attackFlowFlood opens 12,000 flows on one connection with one byte each
// and never acknowledges the echoes.
func attackFlowFlood(ctx context.Context, victim netip.AddrPort) (string, error) {
	var ok, refused atomic.Int64
	opened := 0
	conf := &quic.Config{KeepAlivePeriod: time.Second, MaxIncomingStreams: 1 << 14}
	err := onRawConn(ctx, victim, conf, func(qc *quic.Conn, wg *sync.WaitGroup) {
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
	return fmt.Sprintf("%d opened, %d accepted, %d refused", opened, ok.Load(), refused.Load()), err
}

// initialRate is how many fake Initials per second attackInitials sends:
// about the rate of the measurement in issue 13 (9.8k/s).
const initialRate = 10000

// attackInitials floods the victim with QUIC Initials that no one will
// ever answer, as from spoofed addresses: each has a new connection ID
// and a payload of noise, which costs the sender nothing, and the receiver
// a connection until its handshake times out unless it asks for a Retry.
func attackInitials(ctx context.Context, victim netip.AddrPort) (string, error) {
	return sendPackets(ctx, victim, initialRate, 16, func(b []byte) []byte {
		return fakeInitial(b[:0])
	}, "Initials")
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

// attackJunk sends random datagrams at junkRate, half of them with a
// QUIC long header.
func attackJunk(ctx context.Context, victim netip.AddrPort) (string, error) {
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

// attackConns opens 2,000 connections, each with a fresh key, from the
// honest client's address, and leaves them idle.
func attackConns(ctx context.Context, victim netip.AddrPort) (string, error) {
	var trs []*quic.Transport
	var qcs []*quic.Conn
	defer func() {
		for _, tr := range trs {
			tr.Close()
		}
	}()
	for len(trs) < 2000 && ctx.Err() == nil {
		tr, qc, err := rawDial(ctx, victim, &quic.Config{KeepAlivePeriod: time.Second})
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
	return fmt.Sprintf("%d connections opened, %d closed by the victim", len(qcs), closed), nil
}
