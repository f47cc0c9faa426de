package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
	"github.com/stretchr/testify/require"
)

// Bad input ends with a clear error and a non-zero exit, never a hang.
func TestBadInputFailsFastAndSaysWhy(t *testing.T) {
	url := testRegistry(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "k.pem")
	notKey := filepath.Join(dir, "notkey.pem")
	require.NoError(t, os.WriteFile(notKey, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600))
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	deadPort := freePort(t)

	for _, tc := range []struct {
		name string
		args []string
		code int
		says []string
	}{
		{"no command", nil, 2, []string{"usage: roam COMMAND"}},
		{"unknown command", []string{"srve"}, 2, []string{`unknown command "srve"`}},
		{"unreachable target", []string{"serve", "-resolver", url, "-key", key, "web.demo", "tcp://127.0.0.1:" + deadPort}, 1,
			[]string{"target tcp://127.0.0.1:" + deadPort, "connection refused"}},
		{"nobody serves it (forward)", []string{"forward", "-resolver", url, "-key", key, "nobody.demo"}, 1, []string{"nobody.demo", "not found"}},
		{"nobody serves it (dial)", []string{"dial", "-resolver", url, "-key", key, "nobody.demo"}, 1, []string{"nobody.demo", "not found"}},
		{"nobody serves it (ping)", []string{"ping", "-resolver", url, "-key", key, "nobody.demo"}, 1, []string{"nobody.demo", "not found"}},
		{"malformed ID", []string{"dial", "-resolver", url, "-key", key, "bad..demo"}, 2, []string{`invalid service ID "bad..demo"`, "usage: roam dial"}},
		{"zero key pin", []string{"dial", "-resolver", url, "-key", key, "rk--" + strings.Repeat("a", 52)}, 2, []string{"invalid service ID"}},
		{"malformed URL", []string{"serve", "-resolver", url, "-key", key, "web.demo", "http://127.0.0.1:80"}, 2, []string{"want tcp://HOST:PORT"}},
		{"URL without a port", []string{"serve", "-resolver", url, "-key", key, "web.demo", "tcp://127.0.0.1"}, 2, []string{"want tcp://HOST:PORT"}},
		{"missing target", []string{"serve", "-resolver", url, "-key", key, "web.demo"}, 2, []string{"missing arguments"}},
		{"taken listen port", []string{"forward", "-resolver", url, "-key", key, "-listen", taken.Addr().String(), "web.demo"}, 1,
			[]string{taken.Addr().String(), "address already in use"}},
		{"key file not a key", []string{"dial", "-resolver", url, "-key", notKey, "web.demo"}, 1, []string{"not a key file", notKey}},
		{"key file unreadable", []string{"dial", "-resolver", url, "-key", dir, "web.demo"}, 1, []string{"key file", dir}},
		{"malformed resolver URL", []string{"dial", "-resolver", "nosuch://x", "-key", key, "web.demo"}, 1, []string{"nosuch://x"}},
		{"no resolver", []string{"dial", "-resolver", "", "-key", key, "web.demo"}, 2, []string{"no resolver", resolve.EnvResolver}},
		{"bad flag", []string{"serve", "-nosuch"}, 2, []string{"flag provided but not defined: -nosuch"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "no resolver" {
				t.Setenv(resolve.EnvResolver, "")
			}
			start := time.Now()
			r := runRoam(t, nil, tc.args...)
			code := r.wait(20 * time.Second)
			require.Equal(t, tc.code, code, "exit status; stderr: %s", r.stderr)
			for _, s := range tc.says {
				require.Contains(t, r.stderr.String(), s)
			}
			require.Less(t, time.Since(start), 15*time.Second, "failed fast")
		})
	}
}

// A name stays with its key: a second `roam serve` of a served name with
// another key is refused, and says who holds it; the same key, restarted
// on another port after a SIGKILL-like stop that withdrew nothing, gets
// its name back at once.
func TestServeKeepsItsNameAcrossRestarts(t *testing.T) {
	url := testRegistry(t)
	dir := t.TempDir()
	target, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer target.Close()
	tcpURL := "tcp://" + target.Addr().String()
	key := filepath.Join(dir, "owner.pem")

	first := runRoam(t, nil, "serve", "-resolver", url, "-key", key, "app.demo", tcpURL)
	first.line("roam serve: ")

	rogue := runRoam(t, nil, "serve", "-resolver", url, "-key", filepath.Join(dir, "rogue.pem"), "app.demo", tcpURL)
	require.Equal(t, 1, rogue.wait(20*time.Second))
	require.Contains(t, rogue.stderr.String(), "service is bound to another key")
	owner, err := sal.LoadKey(key)
	require.NoError(t, err)
	ownerID, err := sal.KeyID(owner.Public())
	require.NoError(t, err)
	fp, _ := ownerID.Key()
	require.Contains(t, rogue.stderr.String(), fp.String(), "the refusal names the key that holds the name")

	// The key command prints the same self-certifying ID.
	k := runRoam(t, nil, "key", key)
	require.Equal(t, 0, k.wait(10*time.Second))
	require.Equal(t, ownerID.String(), strings.TrimSpace(k.stdout.String()))

	// A restart with the same key, on another port, is let in.
	require.Equal(t, 0, first.stop())
	again := runRoam(t, nil, "serve", "-resolver", url, "-key", key, "app.demo", tcpURL)
	again.line("roam serve: ")
	require.Equal(t, 0, again.stop())
}

// SIGINT (or SIGTERM) ends serve with status 0, its registration
// withdrawn: the service resolves to nothing at once, not after a lease.
func TestServeWithdrawsOnStop(t *testing.T) {
	url := testRegistry(t)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer target.Close()
	serve := runRoam(t, nil, "serve", "-resolver", url, "-key", filepath.Join(t.TempDir(), "k.pem"), "gone.demo", "tcp://"+target.Addr().String())
	serve.line("roam serve: ")

	res := runRoam(t, nil, "resolve", "-resolver", url, "gone.demo")
	require.Equal(t, 0, res.wait(10*time.Second), res.stderr.String())
	require.Contains(t, res.stdout.String(), "127.0.0.1:")

	require.Equal(t, 0, serve.stop())
	require.Contains(t, serve.stderr.String(), "msg=stopped")
	res = runRoam(t, nil, "resolve", "-resolver", url, "gone.demo")
	require.Equal(t, 1, res.wait(10*time.Second))
	require.Contains(t, res.stderr.String(), "not found", "withdrawn, not waiting for its lease")
}

// roam dial carries stdin to the service and the service's answer to
// stdout, half-closing after stdin's end, byte-exact; ping reports it.
func TestDialIsNetcat(t *testing.T) {
	url := testRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := libraryHost(t, url)
	l, err := h.Listen(ctx, "sum.demo")
	require.NoError(t, err)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sum := sha256.New()
				io.Copy(sum, c) // until the dialer's half-close
				c.Write(sum.Sum(nil))
			}()
		}
	}()

	data := bytes.Repeat([]byte("roam dial "), 300_000) // 3 MB
	// Over two paths (two local addresses), as a vehicle's two modems.
	stdin, feed := io.Pipe() // nothing to send until the paths are checked
	d := runRoam(t, stdin, "dial", "-resolver", url, "-key", filepath.Join(t.TempDir(), "k.pem"),
		"-udp", "127.0.0.1:0", "-path", "127.0.0.2:0", "sum.demo")
	paths := d.host().Paths() // (before the command ends and closes it)
	require.Len(t, paths, 2, "-udp and -path")
	require.Equal(t, "127.0.0.2", paths[1].Local.Addr().String())
	go func() {
		feed.Write(data)
		feed.Close()
	}()
	require.Equal(t, 0, d.wait(30*time.Second), d.stderr.String())
	want := sha256.Sum256(data)
	require.Equal(t, string(want[:]), d.stdout.String(), "the service read every byte, and its answer came back")
	require.Empty(t, d.stderr.String(), "dial says nothing on stderr when all is well (ssh's ProxyCommand shares it)")

	p := runRoam(t, nil, "ping", "-resolver", url, "-key", filepath.Join(t.TempDir(), "k.pem"), "-c", "2", "sum.demo")
	require.Equal(t, 0, p.wait(20*time.Second), p.stderr.String())
	require.Regexp(t, `127\.0\.0\.1:\d+\s+yes\s+\S+ / \S+ / \S+`, p.stdout.String())
}

// A half-close crosses forward and serve either way: the client's
// CloseWrite reaches the server as EOF while the server still answers,
// and the server's CloseWrite reaches the client while it still sends.
func TestHalfCloseBothWays(t *testing.T) {
	url := testRegistry(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*net.TCPConn)
				var mode [1]byte
				if _, err := io.ReadFull(tc, mode[:]); err != nil {
					return
				}
				if mode[0] == 'a' { // answer after the client's EOF
					sum := sha256.New()
					io.Copy(sum, tc)
					tc.Write(sum.Sum(nil))
					return
				}
				// 'b': say goodbye first, then read on until the client's EOF
				tc.Write([]byte("bye"))
				tc.CloseWrite()
				sum := sha256.New()
				io.Copy(sum, tc)
				if _, err := tc.Write([]byte("late")); err == nil {
					t.Error("a write after CloseWrite succeeded")
				}
			}()
		}
	}()
	dir := t.TempDir()
	serve := runRoam(t, nil, "serve", "-resolver", url, "-key", filepath.Join(dir, "s.pem"), "half.demo", "tcp://"+ln.Addr().String())
	serve.line("roam serve: ")
	fwd := runRoam(t, nil, "forward", "-resolver", url, "-key", filepath.Join(dir, "f.pem"), "half.demo")
	addr := forwardAddr(fwd)

	data := bytes.Repeat([]byte("half"), 1<<18) // 1 MiB
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write(append([]byte{'a'}, data...))
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	want := sha256.Sum256(data)
	require.Equal(t, want[:], got, "the server read to EOF, then answered over the half-open flow")

	c2, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c2.Close()
	_, err = c2.Write([]byte{'b'})
	require.NoError(t, err)
	got, err = io.ReadAll(c2) // the server's half-close arrives as EOF
	require.NoError(t, err)
	require.Equal(t, "bye", string(got))
	_, err = c2.Write(data) // and this side can still send
	require.NoError(t, err)
	require.NoError(t, c2.(*net.TCPConn).CloseWrite())
}

// Stopping serve ends its flows cleanly: a client in the middle of a flow
// reads what the target sent and then io.EOF, not ErrFlowLost, because
// serve closes each flow and lets it finish before its Host closes.
func TestServeStopEndsFlowsCleanly(t *testing.T) {
	url := testRegistry(t)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer target.Close()
	go func() {
		for { // (serve's start-up check connects once first)
			c, err := target.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("hello"))
				io.Copy(io.Discard, c) // until serve closes the connection
			}()
		}
	}()
	serve := runRoam(t, nil, "serve", "-resolver", url, "-key", filepath.Join(t.TempDir(), "k.pem"), "bye.demo", "tcp://"+target.Addr().String())
	serve.line("roam serve: ")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := libraryHost(t, url)
	c, err := h.Dial(ctx, "bye.demo")
	require.NoError(t, err)
	defer c.Close()
	got := make([]byte, 5)
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, "hello", string(got))

	type result struct {
		rest []byte
		err  error
	}
	read := make(chan result, 1)
	go func() { // a client that reads on, as a program does
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		rest, err := io.ReadAll(c)
		read <- result{rest, err}
	}()
	start := time.Now()
	require.Equal(t, 0, serve.stop())
	took := time.Since(start)
	res := <-read
	require.NoError(t, res.err, "the flow ended with io.EOF")
	require.Empty(t, res.rest)
	require.Less(t, took, drainTimeout, "the flow finished: serve did not wait out its drain bound")
}
