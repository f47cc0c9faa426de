package emu

import (
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDeadAddrs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var dead DeadAddrs
		b := newBed(t, 1, PathConfig{Up: LinkConfig{Delay: 10 * time.Millisecond}, Hook: dead.Hook})
		other := listen(t, b.nw, netip.MustParseAddrPort("10.0.1.3:5000"))
		b.send(t, "a")
		_, m := read(t, b.srv)

		// Killed while in the link: it still arrives.
		b.send(t, "in the air")
		dead.Kill(cliAddr, m, netip.AddrPort{})
		msg, _ := read(t, b.srv)
		require.Equal(t, "in the air", msg)

		b.send(t, "from the dead")
		_, err := b.srv.WriteToUDPAddrPort([]byte("to the dead"), m)
		require.NoError(t, err)
		require.Equal(t, uint64(1), b.path.Link(Up).Stats().Dropped[DropHook])
		require.Equal(t, uint64(1), b.path.Link(Down).Stats().Dropped[DropHook])

		// Another client is untouched, both ways.
		_, err = other.WriteToUDPAddrPort([]byte("alive"), b.path.ServerAddr())
		require.NoError(t, err)
		msg, m2 := read(t, b.srv)
		require.Equal(t, "alive", msg)
		_, err = b.srv.WriteToUDPAddrPort([]byte("reply"), m2)
		require.NoError(t, err)
		msg, _ = read(t, other)
		require.Equal(t, "reply", msg)
	})
}
