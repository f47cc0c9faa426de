package dnstest_test

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/roamnet/roam/resolve/internal/dnstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ask sends one query over network and returns the messages read until
// the socket goes quiet (UDP) or one reply (TCP).
func ask(t *testing.T, network, addr, name string, typ dnsmessage.Type) []dnsmessage.Message {
	t.Helper()
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 42, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}},
	}
	msg, err := q.Pack()
	require.NoError(t, err)
	c, err := net.Dial(network, addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(200*time.Millisecond)))
	var out []dnsmessage.Message
	if network == "tcp" {
		_, err = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...))
		require.NoError(t, err)
		var n [2]byte
		_, err = io.ReadFull(c, n[:])
		require.NoError(t, err)
		buf := make([]byte, binary.BigEndian.Uint16(n[:]))
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		var m dnsmessage.Message
		require.NoError(t, m.Unpack(buf))
		return append(out, m)
	}
	_, err = c.Write(msg)
	require.NoError(t, err)
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return out // the deadline: no more replies
		}
		var m dnsmessage.Message
		require.NoError(t, m.Unpack(buf[:n]))
		out = append(out, m)
	}
}

func TestServer(t *testing.T) {
	s := dnstest.NewServer(t)
	s.SetSRV("_roam._udp.web.example", time.Minute, dnstest.SRV{Priority: 1, Port: 443, Target: "h.example"})
	s.SetAddrs("H.example.", 30*time.Second, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"))
	s.SetTXT("_roam._udp.web.example", time.Minute, "key=x")

	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, network, s.Addr(), "_roam._udp.web.example.", dnsmessage.TypeSRV)
		require.Len(t, r, 1)
		require.Equal(t, uint16(42), r[0].ID)
		require.True(t, r[0].Response)
		require.Len(t, r[0].Answers, 1)
		require.Equal(t, uint32(60), r[0].Answers[0].Header.TTL)
		require.Len(t, r[0].Additionals, 2, "glue: the target's A and AAAA")
	}
	require.Equal(t, 2, s.Count("_roam._udp.web.example", dnsmessage.TypeSRV))
	require.Equal(t, 1, s.TCPQueries())

	r := ask(t, "udp", s.Addr(), "h.example.", dnsmessage.TypeAAAA)
	require.Len(t, r[0].Answers, 1)
	require.Equal(t, [16]byte(netip.MustParseAddr("2001:db8::1").As16()), r[0].Answers[0].Body.(*dnsmessage.AAAAResource).AAAA)

	r = ask(t, "udp", s.Addr(), "h.example.", dnsmessage.TypeTXT)
	require.Equal(t, dnsmessage.RCodeSuccess, r[0].RCode, "NODATA")
	require.Empty(t, r[0].Answers)
	r = ask(t, "udp", s.Addr(), "nosuch.example.", dnsmessage.TypeA)
	require.Equal(t, dnsmessage.RCodeNameError, r[0].RCode)
}

func TestServerModes(t *testing.T) {
	s := dnstest.NewServer(t)
	s.SetAddrs("h.example", time.Minute, netip.MustParseAddr("192.0.2.1"))

	s.SetMode(dnstest.Mode{RCode: dnsmessage.RCodeServerFailure})
	r := ask(t, "udp", s.Addr(), "h.example.", dnsmessage.TypeA)
	require.Equal(t, dnsmessage.RCodeServerFailure, r[0].RCode)
	require.Empty(t, r[0].Answers)

	s.SetMode(dnstest.Mode{Drop: true})
	require.Empty(t, ask(t, "udp", s.Addr(), "h.example.", dnsmessage.TypeA))

	s.SetMode(dnstest.Mode{Truncate: true})
	r = ask(t, "udp", s.Addr(), "h.example.", dnsmessage.TypeA)
	require.True(t, r[0].Truncated)
	require.Empty(t, r[0].Answers)
	r = ask(t, "tcp", s.Addr(), "h.example.", dnsmessage.TypeA)
	require.False(t, r[0].Truncated)
	require.Len(t, r[0].Answers, 1)

	s.SetMode(dnstest.Mode{Spoof: true})
	r = ask(t, "udp", s.Addr(), "h.example.", dnsmessage.TypeA)
	require.Len(t, r, 3)
	require.NotEqual(t, uint16(42), r[0].ID)
	require.Equal(t, "forged.example.", r[1].Questions[0].Name.String())
	require.Equal(t, [4]byte{192, 0, 2, 1}, r[2].Answers[0].Body.(*dnsmessage.AResource).A)

	require.Equal(t, 5, s.Queries())
}

// Close ends every goroutine, also those serving a TCP client that stays.
func TestServerCloseWithOpenConn(t *testing.T) {
	s, err := dnstest.Start()
	require.NoError(t, err)
	c, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte{0}) // half a length prefix: the server waits for more
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
}
