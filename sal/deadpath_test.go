package sal

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// A path that dies for good must fail its flows within about
// ResumeTimeout of the last packet heard: not after QUIC's 30 s idle
// timeout plus ResumeTimeout, as it once did (33 s for a 3 s
// ResumeTimeout). The emulated path goes dark for an hour, in virtual time.

func TestDeadPathFailsWithinResumeTimeout(t *testing.T) {
	const resumeTimeout = 3 * time.Second
	for _, tc := range []struct {
		name string
		// serverTimeout is the listening end's ResumeTimeout; zero is the
		// default (60 s).
		serverTimeout time.Duration
		// busy: the dialer writes all along, so data is in flight when the
		// path dies; else both ends sit in Read, and only keep-alives
		// find out.
		busy bool
	}{
		{"writing", resumeTimeout, true},
		{"idle reader", resumeTimeout, false},
		{"writing, listener with the default", 0, true},
		{"idle reader, listener with the default", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBedWith(t, calm,
					Config{ResumeTimeout: tc.serverTimeout},
					Config{ResumeTimeout: resumeTimeout})
				roundTrip(t, b.c, b.sc, "before the path dies")

				clientErr := make(chan error, 1)
				if tc.busy {
					go func() {
						chunk := make([]byte, 32<<10)
						for {
							if _, err := b.c.Write(chunk); err != nil {
								clientErr <- err
								return
							}
						}
					}()
					go io.Copy(io.Discard, b.sc)
					time.Sleep(200 * time.Millisecond) // data in flight
				} else {
					go func() {
						_, err := b.c.Read(make([]byte, 1))
						clientErr <- err
					}()
					time.Sleep(100 * time.Millisecond)
				}
				dark := time.Now()
				b.path.Blackout(time.Hour)

				err := <-clientErr
				took := time.Since(dark)
				require.ErrorIs(t, err, ErrFlowLost)
				require.Contains(t, err.Error(), "no resume within 3s", "says why")
				require.Less(t, took, 5*time.Second, "the dialer fails within about ResumeTimeout of the last packet heard")
				require.Greater(t, took, resumeTimeout-time.Second, "but not before ResumeTimeout")
				t.Logf("dialer: ErrFlowLost %v after the path went dark", took.Round(time.Millisecond))

				// The listening end gives up by its own ResumeTimeout, also
				// counted from the last packet heard, and never before the
				// dialer stops trying.
				_, err = b.sc.Write(make([]byte, 1))
				for err == nil {
					time.Sleep(100 * time.Millisecond)
					_, err = b.sc.Write(make([]byte, 1))
				}
				took = time.Since(dark)
				require.ErrorIs(t, err, ErrFlowLost)
				limit := 5 * time.Second
				if tc.serverTimeout == 0 {
					limit = 65 * time.Second
				}
				require.Less(t, took, limit, "the listener fails within about its ResumeTimeout of the last packet heard")
				require.Greater(t, took, resumeTimeout-time.Second)
				t.Logf("listener: ErrFlowLost %v after the path went dark", took.Round(time.Millisecond))
			})
		})
	}
}

// TestDeadPathFailsWhenQUICIdleTimeoutIsLonger: an idle timeout set in
// Config.QUIC past ResumeTimeout does not stretch it; the dialer's silence
// watcher ends the connection.
func TestDeadPathFailsWhenQUICIdleTimeoutIsLonger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBedWith(t, calm, Config{},
			Config{ResumeTimeout: 3 * time.Second, QUIC: &quic.Config{MaxIdleTimeout: 30 * time.Second}})
		roundTrip(t, b.c, b.sc, "before the path dies")
		go io.Copy(io.Discard, b.sc)
		errc := make(chan error, 1)
		go func() {
			chunk := make([]byte, 32<<10)
			for {
				if _, err := b.c.Write(chunk); err != nil {
					errc <- err
					return
				}
			}
		}()
		time.Sleep(200 * time.Millisecond)
		dark := time.Now()
		b.path.Blackout(time.Hour)
		err := <-errc
		require.ErrorIs(t, err, ErrFlowLost)
		require.Less(t, time.Since(dark), 5*time.Second)
	})
}

// TestTunnelWithinResumeTimeoutSurvives: a 35 s tunnel is longer than
// QUIC's 30 s idle timeout but shorter than the default ResumeTimeout
// (60 s) counted from the last packet heard: the flow resumes and every
// byte arrives, in order, once.
func TestTunnelWithinResumeTimeoutSurvives(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBed(t, calm, Config{})
		const n = 4 << 20
		tunnelled := false
		start := time.Now()
		transfer(t, b.c, b.sc, n, func(sent int) {
			if sent >= n/2 && !tunnelled {
				tunnelled = true
				b.path.Blackout(35 * time.Second)
			}
		})
		require.True(t, tunnelled)
		require.Greater(t, time.Since(start), 35*time.Second, "the transfer waited out the tunnel")
		require.NotZero(t, b.c.Stats().Resumes, "the connection died of its idle timeout; the flow resumed")
		b.requireNoLoss(t)
	})
}

func TestPeerSpoke(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("socket gone"), false},
		{&quic.IdleTimeoutError{}, false},
		{&quic.ApplicationError{ErrorCode: codeMoved}, false},
		{&quic.ApplicationError{ErrorCode: codeMoved, Remote: true}, true},
		{fmt.Errorf("wrapped: %w", &quic.TransportError{Remote: true}), true},
		{&quic.StreamError{ErrorCode: streamMoved, Remote: true}, true},
		{&quic.StreamError{ErrorCode: streamMoved}, false},
		{&quic.StatelessResetError{}, true},
	} {
		require.Equal(t, tc.want, peerSpoke(tc.err), "%v", tc.err)
	}
}
