package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
)

// roam registry -v (then roam-registry -v) once logged every client that disconnected as a
// "malformed request". Clients that come, ask and go leave no such line.
func TestDaemonDoesNotLogLeavingClientsAsMalformed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	url, daemonLog := start(t, exec.Command(buildRoam(t), "registry", "-listen", "127.0.0.1:0", "-v"), "roam registry: serving ")
	for range 3 {
		_, err := freshResolve(url, "nobody.demo")
		require.ErrorIs(t, err, resolve.ErrNotFound)
	}
	time.Sleep(200 * time.Millisecond) // the last client's close reaches the daemon
	log := daemonLog.String()
	require.Contains(t, log, "level=DEBUG", "-v logs at debug level")
	require.NotContains(t, log, "malformed")
	require.Equal(t, 0, strings.Count(log, "level=WARN")+strings.Count(log, "level=ERROR"), log)
}
