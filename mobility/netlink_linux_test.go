package mobility

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// nlmsg builds one netlink message of type typ with a zeroed family header
// of hdrLen bytes followed by route attributes of the given types.
func nlmsg(typ uint16, hdrLen int, attrTypes ...uint16) []byte {
	body := make([]byte, hdrLen)
	for _, at := range attrTypes {
		a := make([]byte, 8) // 4-byte header + 4 bytes of value
		binary.NativeEndian.PutUint16(a[0:2], 8)
		binary.NativeEndian.PutUint16(a[2:4], at)
		body = append(body, a...)
	}
	m := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(m[0:4], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(m[4:6], typ)
	return append(m, body...)
}

func TestWantEvent(t *testing.T) {
	wireless := nlmsg(unix.RTM_NEWLINK, unix.SizeofIfInfomsg, unix.IFLA_MTU, unix.IFLA_WIRELESS)
	link := nlmsg(unix.RTM_NEWLINK, unix.SizeofIfInfomsg, unix.IFLA_MTU, unix.IFLA_OPERSTATE)
	delAddr := nlmsg(unix.RTM_DELADDR, unix.SizeofIfAddrmsg, unix.IFA_ADDRESS)
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	truncated := cat(wireless, delAddr)[:len(wireless)+6]
	badLen := append([]byte(nil), delAddr...)
	binary.NativeEndian.PutUint32(badLen[0:4], 4)

	for _, tt := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"address deleted", delAddr, true},
		{"link change", link, true},
		{"wireless only", wireless, false},
		{"two wireless", cat(wireless, wireless), false},
		{"wireless then address", cat(wireless, delAddr), true},
		{"wireless with a nested-flag type", nlmsg(unix.RTM_NEWLINK, unix.SizeofIfInfomsg, unix.IFLA_WIRELESS|unix.NLA_F_NESTED), false},
		{"wireless then a partial header", truncated, true},
		{"short link message", nlmsg(unix.RTM_NEWLINK, 4), true},
		{"length too small", badLen, true},
		{"length past the end", cat(delAddr)[:len(delAddr)-1], true},
		{"empty", nil, true},
		{"garbage", []byte{1, 2, 3}, true},
	} {
		require.Equal(t, tt.want, wantEvent(tt.b), tt.name)
	}
}

// FuzzWantEvent checks that no datagram makes the decoder panic or loop.
func FuzzWantEvent(f *testing.F) {
	f.Add(nlmsg(unix.RTM_NEWLINK, unix.SizeofIfInfomsg, unix.IFLA_WIRELESS))
	f.Add(nlmsg(unix.RTM_NEWADDR, unix.SizeofIfAddrmsg, unix.IFA_ADDRESS))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = wantEvent(b)
		_ = hasAttr(b, unix.IFLA_WIRELESS)
	})
}

// TestNetlinkOpenClose opens the real netlink source in this process's
// namespace (no privilege needed to listen) and checks that Close ends
// the blocked read promptly.
func TestNetlinkOpenClose(t *testing.T) {
	m, err := NewMonitor(MonitorConfig{})
	require.NoError(t, err)
	require.NotNil(t, m.src, "netlink unavailable")
	start := time.Now()
	require.NoError(t, m.Close())
	require.Less(t, time.Since(start), time.Second)
	require.NoError(t, m.Close())
}
