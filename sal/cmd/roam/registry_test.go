package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
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
	"go.uber.org/goleak"
)

// envProvider makes the test binary a provider process: it serves the
// service it names as an echo server through $ROAM_RESOLVER, prints its
// address, and runs until killed.
const envProvider = "ROAM_TEST_PROVIDER"

func TestMain(m *testing.M) {
	if service := os.Getenv(envProvider); service != "" {
		if err := provide(service); err != nil {
			fmt.Fprintln(os.Stderr, "provider:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if roamBin.path != "" {
		os.RemoveAll(filepath.Dir(roamBin.path))
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func provide(service string) error {
	h, err := sal.NewHost(sal.Config{ListenAddr: "127.0.0.1:0"}) // resolver from $ROAM_RESOLVER
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	l, err := h.Listen(ctx, service) // registered with the registry when it returns
	cancel()
	if err != nil {
		return err
	}
	fmt.Println("ready", h.LocalAddr())
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			io.Copy(c, c)
			c.Close()
		}()
	}
}

// roamBin is the roam command, built once for the tests that run it as
// a process (ssh's ProxyCommand, the registry daemon, a provider killed
// with SIGKILL).
var roamBin struct {
	once sync.Once
	path string
	err  error
}

// buildRoam builds the roam command into a temporary directory, once per
// test binary.
func buildRoam(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build roam with:", err)
	}
	roamBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "roam-bin-")
		if err != nil {
			roamBin.err = err
			return
		}
		roamBin.path = filepath.Join(dir, "roam")
		out, err := exec.Command(gobin, "build", "-o", roamBin.path, ".").CombinedOutput()
		if err != nil {
			roamBin.err = fmt.Errorf("go build: %w: %s", err, out)
		}
	})
	require.NoError(t, roamBin.err)
	return roamBin.path
}

// start runs cmd, and returns the first stdout line that begins with
// prefix (with the prefix cut off) and the process's stderr. The process is
// killed, and waited for, when the test ends.
func start(t *testing.T, cmd *exec.Cmd, prefix string) (string, *resolvetest.LogBuffer) {
	t.Helper()
	lines, stderr := startLines(t, cmd, prefix)
	return lines[0], stderr
}

// startLines is start for several lines, one per prefix, in the order the
// process prints them.
func startLines(t *testing.T, cmd *exec.Cmd, prefixes ...string) ([]string, *resolvetest.LogBuffer) {
	t.Helper()
	stderr := new(resolvetest.LogBuffer)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	found := make(chan []string, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		var got []string
		for sc.Scan() {
			if len(got) < len(prefixes) {
				if s, ok := strings.CutPrefix(sc.Text(), prefixes[len(got)]); ok {
					if got = append(got, s); len(got) == len(prefixes) {
						found <- got
					}
				}
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	select {
	case lines := <-found:
		return lines, stderr
	case <-exited:
		t.Fatalf("%s exited before printing %q: %s", cmd.Path, prefixes, stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s printed no %q within 60 s: %s", cmd.Path, prefixes, stderr)
	}
	return nil, nil
}

// freshResolve resolves service from a new client, as a process that has
// just started would.
func freshResolve(url, service string) ([]resolve.Endpoint, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := resolve.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	defer r.(io.Closer).Close()
	return r.Resolve(ctx, service)
}

// echoChecked sends n random bytes to service through url's registry and
// checks the echo by its SHA-256.
func echoChecked(t *testing.T, url, service string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := libraryHost(t, url)
	c, err := h.Dial(ctx, service)
	require.NoError(t, err)
	defer c.Close()
	data := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{7})
	rng.Read(data)
	go func() {
		c.Write(data)
		c.CloseWrite()
	}()
	sum := sha256.New()
	got, err := io.Copy(sum, c)
	require.NoError(t, err)
	require.EqualValues(t, n, got)
	require.Equal(t, sha256.Sum256(data), [32]byte(sum.Sum(nil)), "echo checksum")
}

// With the daemon's defaults, the sole provider of a service, SIGKILLed
// (so its lease stays until it runs out, 15 s), is out of a fresh client's
// answers within 5 s: Resolve fails with ErrAllDown rather than returning
// the dead endpoint. With -answer-all-down, the dead endpoint is still
// answered once it is known to be down.
func TestSIGKILLedSoleProviderLeavesAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon and a provider process")
	}
	bin := buildRoam(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"answer-all-down", []string{"-answer-all-down"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const service = "sole.demo"
			args := append([]string{"registry", "-listen", "127.0.0.1:0", "-v"}, tc.args...)
			url, daemonLog := start(t, exec.Command(bin, args...), "roam registry: serving ")
			provider := exec.Command(os.Args[0], "-test.run=^$")
			provider.Env = append(os.Environ(), envProvider+"="+service, resolve.EnvResolver+"="+url)
			addr, _ := start(t, provider, "ready ")

			eps, err := freshResolve(url, service)
			require.NoError(t, err)
			require.Len(t, eps, 1)
			require.Equal(t, addr, eps[0].Addr.String())
			echoChecked(t, url, service, 1<<20)

			require.NoError(t, provider.Process.Kill()) // SIGKILL: no withdrawal
			killed := time.Now()
			if tc.args == nil {
				for {
					eps, err = freshResolve(url, service)
					if errors.Is(err, resolve.ErrAllDown) {
						break
					}
					require.NoError(t, err, "before it is known down, the endpoint is answered")
					require.Equal(t, addr, eps[0].Addr.String())
					require.Less(t, time.Since(killed), 10*time.Second, "dead endpoint still answered: %s", daemonLog)
					time.Sleep(50 * time.Millisecond)
				}
				took := time.Since(killed)
				t.Logf("a fresh client's Resolve fails with ErrAllDown %.2f s after the SIGKILL: %v", took.Seconds(), err)
				require.Less(t, took, 5*time.Second, "out of answers within 5 s")
				require.ErrorIs(t, err, resolve.ErrNotFound)
				require.Empty(t, eps)
				require.Contains(t, daemonLog.String(), "endpoint down")
				_, err = freshResolve(url, service)
				require.ErrorIs(t, err, resolve.ErrAllDown, "and stays out")
			} else {
				require.Eventually(t, func() bool { return strings.Contains(daemonLog.String(), "endpoint down") },
					10*time.Second, 50*time.Millisecond, "the daemon marks the endpoint down")
				eps, err = freshResolve(url, service)
				require.NoError(t, err, "with -answer-all-down the dead endpoint is answered")
				require.Len(t, eps, 1)
				require.Equal(t, addr, eps[0].Addr.String())
			}
		})
	}
}

// A client over a limit reads which one, and the daemon's -debug vars
// count the refusal and show the process's goroutines and heap.
func TestLimitsAndDebugVars(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	bin := buildRoam(t)
	lines, _ := startLines(t, exec.Command(bin, "registry", "-listen", "127.0.0.1:0", "-debug", "127.0.0.1:0", "-max-conns-per-addr", "1"),
		"roam registry: serving ", "roam registry: debug at ")
	url, vars := lines[0], lines[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := resolve.Open(ctx, url)
	require.NoError(t, err)
	defer first.(io.Closer).Close()
	_, err = first.Resolve(ctx, "none.demo")
	require.ErrorIs(t, err, resolve.ErrNotFound)
	_, err = freshResolve(url, "none.demo")
	require.ErrorIs(t, err, resolve.ErrLimit)
	// The address at its limit proves itself (the token of the first
	// connection) and is refused before its handshake.
	var le *resolve.LimitError
	require.ErrorAs(t, err, &le)
	require.Equal(t, resolve.LimitHandshakes, le.Limit)

	var got struct {
		Registry registry.Stats `json:"registry"`
		Process  struct {
			Goroutines int    `json:"goroutines"`
			HeapLive   uint64 `json:"heap_live_bytes"`
			RSS        uint64 `json:"rss_bytes"`
		} `json:"process"`
	}
	getJSON(t, vars, &got)
	require.Positive(t, got.Registry.Limits.ConnsRefusedAddr) // one per Initial the client sent
	require.Equal(t, 1, got.Registry.Conns)
	require.Positive(t, got.Process.Goroutines)
	require.Positive(t, got.Process.RSS)
	getJSON(t, strings.Replace(vars, "/debug/vars", "/debug/gc", 1), &got.Process)
	require.Positive(t, got.Process.HeapLive, "known after the collection /debug/gc asks for")
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}
