package etcdtest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestKillRestart(t *testing.T) {
	c := Start(t, 3)
	require.Len(t, c.Endpoints(), 3)
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	c.Kill(1)
	require.False(t, healthy(context.Background(), client, c.Member(1).ClientURL), "a killed member answers nothing")
	require.Eventually(t, func() bool { return healthy(context.Background(), client, c.Member(0).ClientURL) },
		startTimeout, 20*time.Millisecond, "two of three elect a leader, if the killed one was it")
	c.Restart(1)
	require.True(t, healthy(context.Background(), client, c.Member(1).ClientURL))
}

func TestWholeClusterRestart(t *testing.T) {
	c := Start(t, 3)
	for i := range 3 {
		c.Kill(i)
	}
	c.Restart(0, 1, 2)
	require.Zero(t, c.Watchers(0))
}
