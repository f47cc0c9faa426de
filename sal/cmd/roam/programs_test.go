package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roamnet/roam/resolve/resolvetest"
	"github.com/stretchr/testify/require"
)

// Real, unmodified programs through roam on loopback: each test skips
// with a message where its program is missing; .ci/run installs them.

// curl fetches 64 MiB from python3's http.server through `roam forward`
// and `roam serve`, while the serving Host moves to a new port twice
// mid-transfer; the file arrives byte-exact.
func TestCurlThroughForwardAndServe(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB through two real programs")
	}
	curl := needCommand(t, "curl")
	python := needCommand(t, "python3")
	const size = 64 << 20
	dir := t.TempDir()
	want := randomFile(t, filepath.Join(dir, "blob"), size, 1)
	port := freePort(t)
	httpd := exec.Command(python, "-m", "http.server", port, "--bind", "127.0.0.1", "--directory", dir)
	startProcess(t, httpd)
	waitPort(t, "127.0.0.1:"+port)

	url := testRegistry(t)
	keys := t.TempDir()
	serve := runRoam(t, nil, "serve", "-resolver", url, "-key", filepath.Join(keys, "s.pem"), "-udp", "127.0.0.1:0",
		"files.demo", "tcp://127.0.0.1:"+port)
	host := serve.host()
	serve.line("roam serve: ")
	fwd := runRoam(t, nil, "forward", "-resolver", url, "-key", filepath.Join(keys, "f.pem"), "files.demo")
	addr := forwardAddr(fwd)

	out := filepath.Join(dir, "got")
	// The rate limit stretches the transfer to about 2 s, so that both
	// moves fall inside it on a fast machine too.
	get := exec.Command(curl, "--silent", "--show-error", "--fail", "--limit-rate", "32M",
		"--output", out, "http://"+addr+"/blob")
	curlErr := new(resolvetest.LogBuffer) // read while curl writes
	get.Stderr = curlErr
	require.NoError(t, get.Start())
	curlDone := make(chan error, 1)
	go func() { curlDone <- get.Wait() }()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i, at := range []int64{size / 3, 2 * size / 3} {
		require.Eventually(t, func() bool {
			fi, err := os.Stat(out)
			return err == nil && fi.Size() >= at
		}, 60*time.Second, 5*time.Millisecond, "curl got no %d bytes: %s", at, curlErr.String())
		fi, _ := os.Stat(out)
		require.Less(t, fi.Size(), int64(size), "move %d must fall inside the transfer", i+1)
		before := host.LocalAddr()
		require.NoError(t, host.Rebind(ctx, "127.0.0.1:0"))
		require.NotEqual(t, before, host.LocalAddr(), "the serving Host moved")
		t.Logf("move %d at %d MiB: %v -> %v", i+1, fi.Size()>>20, before, host.LocalAddr())
	}
	select {
	case err := <-curlDone:
		require.NoError(t, err, "curl: %s", curlErr.String())
	case <-ctx.Done():
		t.Fatalf("curl did not finish: %s", curlErr.String())
	}
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Len(t, got, size)
	require.Equal(t, want, sha256.Sum256(got), "curl's file is the server's, byte for byte")
	require.Equal(t, 0, serve.stop())
	require.Equal(t, 0, fwd.stop())
	require.NotContains(t, serve.stderr.String(), "level=WARN", "serve logged no failure")
	require.NotContains(t, fwd.stderr.String(), "level=WARN", "forward logged no failure")
}

// ssh runs a command on an sshd started by the test, with `roam dial` as
// its ProxyCommand, and 4 MiB go through it and back byte-exact.
func TestSSHProxyCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs sshd and ssh")
	}
	sshd := needCommand(t, "sshd")
	ssh := needCommand(t, "ssh")
	keygen := needCommand(t, "ssh-keygen")
	if os.Geteuid() != 0 {
		t.Skip("sshd needs root for its privilege separation")
	}
	require.NoError(t, os.MkdirAll("/run/sshd", 0o755)) // sshd's privilege-separation directory
	dir := t.TempDir()
	for _, k := range []string{"host", "user"} {
		out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput()
		require.NoError(t, err, "ssh-keygen: %s", out)
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user.pub"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600))
	port := freePort(t)
	config := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile none
`, port, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600))
	startProcess(t, exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config")))
	waitPort(t, "127.0.0.1:"+port)

	url := testRegistry(t)
	serve := runRoam(t, nil, "serve", "-resolver", url, "-key", filepath.Join(dir, "s.pem"), "ssh.demo", "tcp://127.0.0.1:"+port)
	serve.line("roam serve: ")
	proxy := fmt.Sprintf("%s dial -resolver '%s' -key %s ssh.demo", buildRoam(t), url, filepath.Join(dir, "d.pem"))

	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	want := sha256.Sum256(data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ssh, "-F", "none", "-i", filepath.Join(dir, "user"),
		"-o", "ProxyCommand="+proxy, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
		"root@ssh.demo", "echo hello from $(hostname) >&2; sha256sum")
	cmd.Stdin = bytes.NewReader(data)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "ssh: %s", stderr.String())
	require.Contains(t, stderr.String(), "hello from")
	got := strings.Fields(stdout.String())
	require.NotEmpty(t, got)
	require.Equal(t, fmt.Sprintf("%x", want), got[0], "the remote end read every byte ssh sent through roam")
	require.Equal(t, 0, serve.stop())
}

// redis-cli talks to redis-server through `roam forward` and `roam serve`:
// a 1 MiB value goes in and comes back byte-exact.
func TestRedisThroughForwardAndServe(t *testing.T) {
	if testing.Short() {
		t.Skip("runs redis-server")
	}
	server := needCommand(t, "redis-server")
	cli := needCommand(t, "redis-cli")
	port := freePort(t)
	dir := t.TempDir()
	startProcess(t, exec.Command(server, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir))
	waitPort(t, "127.0.0.1:"+port)

	url := testRegistry(t)
	serve := runRoam(t, nil, "serve", "-resolver", url, "-key", filepath.Join(dir, "s.pem"), "cache.demo", "tcp://127.0.0.1:"+port)
	serve.line("roam serve: ")
	fwd := runRoam(t, nil, "forward", "-resolver", url, "-key", filepath.Join(dir, "f.pem"), "cache.demo")
	host, fport, _ := strings.Cut(forwardAddr(fwd), ":")

	value := make([]byte, 1<<20)
	for i := range value {
		value[i] = 'a' + byte(i*31%26)
	}
	run := func(stdin []byte, args ...string) string {
		cmd := exec.Command(cli, append([]string{"-h", host, "-p", fport}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "redis-cli %v: %s", args, out)
		return string(out)
	}
	require.Equal(t, "PONG\n", run(nil, "ping"))
	require.Equal(t, "OK\n", run(value, "-x", "set", "big"))
	got := run(nil, "--no-raw", "strlen", "big")
	require.Equal(t, fmt.Sprintf("(integer) %d\n", len(value)), got)
	back := run(nil, "get", "big")
	require.Equal(t, sha256.Sum256(value), sha256.Sum256([]byte(strings.TrimSuffix(back, "\n"))), "the value came back byte-exact")
	require.Equal(t, 0, fwd.stop())
	require.Equal(t, 0, serve.stop())
}
