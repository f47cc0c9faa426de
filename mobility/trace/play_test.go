package trace

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// recorder is a Target that notes what it was told, and when.
type recorder struct {
	start   time.Time
	calls   []string
	moveErr error
}

func (r *recorder) note(format string, args ...any) {
	r.calls = append(r.calls, fmt.Sprintf("%v ", time.Since(r.start))+fmt.Sprintf(format, args...))
}
func (r *recorder) SetLink(l Link)                { r.note("link rtt=%v loss=%v", l.RTT, l.Loss) }
func (r *recorder) Handover(outage time.Duration) { r.note("handover %v", outage) }
func (r *recorder) Blackout(d time.Duration)      { r.note("blackout %v", d) }
func (r *recorder) MoveServer() error             { r.note("move"); return r.moveErr }

func TestPlay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, err := ParseString(`
0    link rtt_ms=60 loss=0.01
1.5  handover outage_ms=100
1.6  link loss=0.02
10   blackout duration_ms=8000
30   server_move
40   end
`)
		require.NoError(t, err)
		r := &recorder{start: time.Now()}
		require.NoError(t, Play(t.Context(), tr, r))
		require.Equal(t, []string{
			"0s link rtt=60ms loss=0.01",
			"1.5s handover 100ms",
			"1.6s link rtt=60ms loss=0.02",
			"10s blackout 8s",
			"30s move",
		}, r.calls)
		require.Equal(t, 40*time.Second, time.Since(r.start))
	})
}

func TestPlayWholeProfileInVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, err := Profile("hsr-300")
		require.NoError(t, err)
		r := &recorder{start: time.Now()}
		require.NoError(t, Play(context.Background(), tr, r))
		require.Equal(t, 10*time.Minute, time.Since(r.start))
		require.Len(t, r.calls, len(tr.Events)-1)
	})
}

func TestPlayStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := Generate(Model{}, 1)
		ctx, cancel := context.WithCancelCause(context.Background())
		cause := errors.New("train arrived")
		time.AfterFunc(30*time.Second, func() { cancel(cause) })
		r := &recorder{start: time.Now()}
		require.ErrorIs(t, Play(ctx, tr, r), cause)
		require.Equal(t, 30*time.Second, time.Since(r.start))

		r = &recorder{start: time.Now(), moveErr: errors.New("no port")}
		tr, err := ParseString("0 link loss=0\n5 server_move\n9 end\n")
		require.NoError(t, err)
		require.ErrorIs(t, Play(context.Background(), tr, r), r.moveErr)
	})
}
