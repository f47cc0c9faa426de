package main

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/registry"
	"github.com/roamnet/roam/resolve/resolvetest"
	"github.com/roamnet/roam/sal"
	"github.com/stretchr/testify/require"
)

// testRegistry starts an embedded registry for the test and returns its URL.
func testRegistry(t testing.TB) string {
	t.Helper()
	r, err := registry.Listen("127.0.0.1:0", registry.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r.URL()
}

// running is the roam command run in-process.
type running struct {
	t      testing.TB
	cancel context.CancelFunc // SIGINT
	done   chan struct{}
	code   int
	stdout *lineBuffer
	stderr *resolvetest.LogBuffer
	hosts  chan *sal.Host
}

// runRoam runs `roam args...` in this process, as a person would run it,
// with stdin. It is stopped (as by SIGINT) when the test ends.
func runRoam(t testing.TB, stdin io.Reader, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{
		t: t, cancel: cancel, done: make(chan struct{}),
		stdout: newLineBuffer(), stderr: new(resolvetest.LogBuffer),
		hosts: make(chan *sal.Host, 4),
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	c := &cli{stdin: stdin, stdout: r.stdout, stderr: r.stderr, hostMade: func(h *sal.Host) { r.hosts <- h }}
	go func() {
		defer close(r.done)
		r.code = c.run(ctx, args)
	}()
	t.Cleanup(func() {
		cancel()
		r.wait(30 * time.Second)
	})
	return r
}

// line waits for the first stdout line that begins with prefix and
// returns the rest of it.
func (r *running) line(prefix string) string {
	r.t.Helper()
	select {
	case s := <-r.stdout.await(prefix):
		return s
	case <-r.done:
		r.t.Fatalf("exited with %d before printing %q: %s", r.code, prefix, r.stderr)
	case <-time.After(30 * time.Second):
		r.t.Fatalf("printed no %q within 30 s: %s", prefix, r.stderr)
	}
	return ""
}

// host returns the Host the command made.
func (r *running) host() *sal.Host {
	r.t.Helper()
	select {
	case h := <-r.hosts:
		return h
	case <-r.done:
		r.t.Fatalf("exited with %d before making a Host: %s", r.code, r.stderr)
	case <-time.After(30 * time.Second):
		r.t.Fatalf("made no Host within 30 s: %s", r.stderr)
	}
	return nil
}

// wait waits for the command to end and returns its exit status; it fails
// the test if that takes longer than d (a hang).
func (r *running) wait(d time.Duration) int {
	r.t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(d):
		r.t.Fatalf("still running after %v: %s", d, r.stderr)
	}
	return -1
}

// stop stops the command as SIGINT would and returns its exit status.
func (r *running) stop() int {
	r.t.Helper()
	r.cancel()
	return r.wait(30 * time.Second)
}

// lineBuffer is a stdout whose lines a test can wait for.
type lineBuffer struct {
	mu      sync.Mutex
	partial string
	lines   []string
	waiters []lineWaiter
}

type lineWaiter struct {
	prefix string
	ch     chan string
}

func newLineBuffer() *lineBuffer { return &lineBuffer{} }

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.partial += string(p)
	for {
		i := strings.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		line := b.partial[:i]
		b.partial = b.partial[i+1:]
		b.lines = append(b.lines, line)
		kept := b.waiters[:0]
		for _, w := range b.waiters {
			if rest, ok := strings.CutPrefix(line, w.prefix); ok {
				w.ch <- rest
			} else {
				kept = append(kept, w)
			}
		}
		b.waiters = kept
	}
	return len(p), nil
}

func (b *lineBuffer) await(prefix string) <-chan string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan string, 1)
	for _, l := range b.lines {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			ch <- rest
			return ch
		}
	}
	b.waiters = append(b.waiters, lineWaiter{prefix, ch})
	return ch
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n") + b.partial
}

// forwardAddr is the local address `roam forward` printed.
func forwardAddr(r *running) string {
	r.t.Helper()
	s := r.line("roam forward: ")
	addr, _, ok := strings.Cut(s, " -> ")
	require.True(r.t, ok, "forward printed %q", s)
	return addr
}

// needCommand skips the test, saying why, when name is not installed.
func needCommand(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
			if p := filepath.Join(dir, name); fileExists(p) {
				return p
			}
		}
		t.Skipf("%s is not installed (.ci/run installs it): %v", name, err)
	}
	return path
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// freePort returns a TCP port on loopback that nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// randomFile writes n seeded random bytes to path and returns their SHA-256.
func randomFile(t *testing.T, path string, n int, seed byte) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{seed})
	sum := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, sum), rng, int64(n))
	require.NoError(t, err)
	return [32]byte(sum.Sum(nil))
}

// waitPort waits until something accepts TCP connections at addr.
func waitPort(t *testing.T, addr string) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 30*time.Second, 20*time.Millisecond, "nothing accepts at %s", addr)
}

// startProcess starts cmd with its output in the test log on failure, and
// kills it when the test ends.
func startProcess(t *testing.T, cmd *exec.Cmd) *resolvetest.LogBuffer {
	t.Helper()
	out := new(resolvetest.LogBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s: %s", filepath.Base(cmd.Path), out)
		}
	})
	return out
}

// libraryHost is a Host of the test's own, a program that imports roam,
// resolving through the registry at url; closed when the test ends.
func libraryHost(t *testing.T, url string) *sal.Host {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := resolve.Open(ctx, url)
	require.NoError(t, err)
	h, err := sal.NewHost(sal.Config{Resolver: r, ListenAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() {
		h.Close()
		r.(io.Closer).Close()
	})
	return h
}
