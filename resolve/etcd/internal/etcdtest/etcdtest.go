// Package etcdtest runs real etcd members for tests: the etcd binary from
// PATH (Debian's etcd-server puts it at /usr/bin/etcd), on free loopback
// ports, with data in temporary directories. Members can be killed and
// restarted to test failures. Everything a Cluster started is killed and
// removed when the test ends.
//
// When the binary is missing, tests skip with a message, except under
// CI=true, where they fail: CI installs etcd, so a missing binary there is a
// broken setup that must not pass as a skip.
package etcdtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvEndpoints names the variable through which CI hands the tests a
// running cluster ("127.0.0.1:2379,127.0.0.1:2479,..."). Tests that do not
// kill members use it when set, each under its own key prefix.
const EnvEndpoints = "ROAM_ETCD_ENDPOINTS"

// startTimeout bounds how long a cluster may take to elect a leader. etcd
// needs well under a second on an idle machine; this is for a loaded one.
const startTimeout = 30 * time.Second

// Binary returns the path of the etcd binary, or skips t (fails it under
// CI=true) if there is none.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("etcd")
	if err == nil {
		return path
	}
	const msg = "etcd not found in PATH (apt-get install etcd-server, or run .ci/run)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI must not skip the etcd tests")
	}
	t.Skip(msg + "; skipping")
	return ""
}

// Installed reports whether tests can run etcd: there is a binary, or CI
// (where a missing binary must fail the tests that want one, not skip
// them). Code that can do without etcd asks this instead of Binary.
func Installed() bool {
	_, err := exec.LookPath("etcd")
	return err == nil || os.Getenv("CI") == "true"
}

// Endpoints returns the client endpoints of a cluster for a test that does
// not disturb it: CI's shared cluster when EnvEndpoints is set, or else a
// one-member cluster of the test's own.
func Endpoints(t testing.TB) []string {
	t.Helper()
	if env := os.Getenv(EnvEndpoints); env != "" {
		return strings.Split(env, ",")
	}
	return Start(t, 1).Endpoints()
}

// Prefix returns a key prefix no other test uses, so that tests sharing a
// cluster (and runs sharing CI's cluster) cannot see each other's keys.
func Prefix(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "/roam-test-" + hex.EncodeToString(b[:]) + "/"
}

// Cluster is a running set of etcd members.
type Cluster struct {
	t       testing.TB
	bin     string
	members []*Member
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string // http://127.0.0.1:port
	PeerURL   string
	dir       string
	args      []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *os.File
}

// Start starts an n-member cluster, waits until it has a leader, and stops
// it when t ends. Ports are found free and then handed to etcd, so another
// process may take one in between: then the whole cluster is tried again.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := Binary(t)
	var err error
	for range 3 {
		c := &Cluster{t: t, bin: bin}
		if err = c.start(n); err == nil {
			t.Cleanup(c.stop)
			return c
		}
		c.stop()
	}
	t.Fatalf("etcdtest: %v", err)
	return nil
}

func (c *Cluster) start(n int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	var initial []string
	for i := range n {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		c.members = append(c.members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	dir := c.t.TempDir()
	token := Prefix(c.t) // any unique string keeps clusters apart
	for _, m := range c.members {
		m.dir = filepath.Join(dir, m.Name)
		m.args = []string{
			"--name", m.Name,
			"--data-dir", filepath.Join(m.dir, "data"),
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			// Fast elections keep start-up and failover quick; the
			// margin of 10 heartbeats keeps a loaded 2-core machine
			// from calling needless elections.
			"--heartbeat-interval", "25",
			"--election-timeout", "250",
			// Test data need not survive a power cut.
			"--unsafe-no-fsync",
			"--logger", "zap",
			"--log-level", "warn",
		}
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return err
		}
		if err := c.run(m); err != nil {
			return err
		}
	}
	return c.waitHealthy(c.members...)
}

// run starts m's process; its output goes to a file shown on failure.
func (c *Cluster) run(m *Member) error {
	f, err := os.OpenFile(filepath.Join(m.dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, m.args...)
	cmd.Stdout, cmd.Stderr = f, f
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", m.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	m.mu.Lock()
	m.cmd, m.done, m.log = cmd, done, f
	m.mu.Unlock()
	return nil
}

// waitHealthy polls each member's /health until it reports a leader.
func (c *Cluster) waitHealthy(ms ...*Member) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections() // else their goroutines outlive the test
	for _, m := range ms {
		for {
			if healthy(ctx, client, m.ClientURL) {
				break
			}
			select {
			case <-m.exited():
				return fmt.Errorf("%s exited during start-up:\n%s", m.Name, m.logTail())
			case <-ctx.Done():
				return fmt.Errorf("%s not healthy within %v:\n%s", m.Name, startTimeout, m.logTail())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

func healthy(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"health":"true"`)
}

// Endpoints returns the members' client addresses, host:port.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = strings.TrimPrefix(m.ClientURL, "http://")
	}
	return eps
}

// Member returns member i.
func (c *Cluster) Member(i int) *Member { return c.members[i] }

// Kill kills member i at once (SIGKILL), as a crash would, and waits for it
// to be gone.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.members[i].kill()
}

// Restart starts killed members again on their old data and ports, and
// waits until they are healthy. Members that make a quorum only together
// (after the whole cluster went down) must be restarted in one call.
func (c *Cluster) Restart(members ...int) {
	c.t.Helper()
	var ms []*Member
	for _, i := range members {
		m := c.members[i]
		m.kill()
		if err := c.run(m); err != nil {
			c.t.Fatalf("etcdtest: %v", err)
		}
		ms = append(ms, m)
	}
	if err := c.waitHealthy(ms...); err != nil {
		c.t.Fatalf("etcdtest: restart: %v", err)
	}
}

// Watchers returns how many watches member i serves now, from its
// etcd_debugging_mvcc_watcher_total gauge, so that a test can find (and
// kill) the member that carries a client's watch.
func (c *Cluster) Watchers(i int) int {
	c.t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get(c.members[i].ClientURL + "/metrics")
	if err != nil {
		c.t.Fatalf("etcdtest: metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("etcdtest: metrics: %v", err)
	}
	const gauge = "etcd_debugging_mvcc_watcher_total "
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, gauge); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				c.t.Fatalf("etcdtest: metrics: %q: %v", line, err)
			}
			return int(n)
		}
	}
	c.t.Fatalf("etcdtest: member %d reports no %s", i, strings.TrimSpace(gauge))
	return 0
}

func (c *Cluster) stop() {
	for _, m := range c.members {
		m.kill()
	}
	if c.t.Failed() {
		for _, m := range c.members {
			c.t.Logf("etcd member %s log:\n%s", m.Name, m.logTail())
		}
	}
}

func (m *Member) exited() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

func (m *Member) kill() {
	m.mu.Lock()
	cmd, done, f := m.cmd, m.done, m.log
	m.cmd, m.log = nil, nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
	f.Close()
}

// logTail returns the end of m's log, for failure messages.
func (m *Member) logTail() string {
	b, err := os.ReadFile(filepath.Join(m.dir, "log"))
	if err != nil {
		return err.Error()
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// freePorts returns n TCP ports on 127.0.0.1 that were free a moment ago.
// All listeners stay open until every port is picked, so the n are distinct.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
