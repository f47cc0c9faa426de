package sal_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// heavyDeps are what the core must not link: the etcd client and what it
// brings. Only programs that import github.com/roamnet/roam/resolve/etcd
// (a module of its own) link them.
var heavyDeps = []string{"go.etcd.io/", "google.golang.org/grpc", "google.golang.org/protobuf", "go.uber.org/zap"}

// TestLeanImports holds the README's promise: its first sample builds to
// at most 1.3x the size and the package count of a bare quic-go program
// with the same handshake, and nothing under sal or resolve links etcd,
// gRPC, protobuf or zap.
func TestLeanImports(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two programs")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	goCmd := func(args ...string) string {
		out, err := exec.Command(gobin, args...).CombinedOutput()
		require.NoError(t, err, "go %s: %s", strings.Join(args, " "), out)
		return string(out)
	}

	core := goCmd("list", "-deps", "github.com/roamnet/roam/sal", "github.com/roamnet/roam/resolve",
		"github.com/roamnet/roam/mobility", "github.com/roamnet/roam/sal/cmd/roam")
	for _, pkg := range strings.Fields(core) {
		for _, heavy := range heavyDeps {
			require.False(t, strings.HasPrefix(pkg, heavy), "the core links %s", pkg)
		}
	}

	dir := t.TempDir()
	measure := func(name string) (size int64, pkgs int) {
		bin := filepath.Join(dir, name)
		goCmd("build", "-o", bin, "./testdata/lean/"+name)
		fi, err := os.Stat(bin)
		require.NoError(t, err)
		return fi.Size(), len(strings.Fields(goCmd("list", "-deps", "./testdata/lean/"+name)))
	}
	size, pkgs := measure("readme")
	baseSize, basePkgs := measure("quicgo")
	t.Logf("README sample: %.1f MB, %d packages; bare quic-go: %.1f MB, %d packages (%.2fx, %.2fx)",
		float64(size)/1e6, pkgs, float64(baseSize)/1e6, basePkgs, float64(size)/float64(baseSize), float64(pkgs)/float64(basePkgs))
	require.LessOrEqual(t, float64(size), 1.3*float64(baseSize), "binary size")
	require.LessOrEqual(t, float64(pkgs), 1.3*float64(basePkgs), "packages linked")
}

// TestLayering holds the layers apart: nothing under resolve imports sal
// (sal depends on resolve, and backends must not depend on the Host), and
// no library package imports bench or examples. Tests may; this reads
// only what the packages themselves import.
func TestLayering(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	out, err := exec.Command(gobin, "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "github.com/roamnet/roam/...").CombinedOutput()
	require.NoError(t, err, "go list: %s", out)
	const mod = "github.com/roamnet/roam/"
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		for _, imp := range imports {
			if strings.HasPrefix(pkg, mod+"resolve") {
				require.False(t, imp == mod+"sal" || strings.HasPrefix(imp, mod+"sal/"), "%s imports %s", pkg, imp)
			}
			if !strings.HasPrefix(pkg, mod+"bench") && !strings.HasPrefix(pkg, mod+"examples") {
				require.False(t, strings.HasPrefix(imp, mod+"bench") || strings.HasPrefix(imp, mod+"examples"), "%s imports %s", pkg, imp)
			}
		}
	}
}
