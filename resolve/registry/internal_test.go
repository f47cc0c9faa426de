package registry

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/resolve/internal/regwire"
)

// CrashClient stops c as a crashed process would: no withdrawal,
// no renewal, its socket gone.
func CrashClient(c *Client) {
	c.mu.Lock()
	c.closed = true
	sess := c.sess
	c.mu.Unlock()
	c.cancel()
	if sess != nil {
		sess.fail(resolve.ErrClosed) // the registry keeps the leases all the same
	}
	c.wg.Wait()
	c.mu.Lock()
	tr := c.tr
	c.mu.Unlock()
	if tr != nil {
		tr.Conn.Close()
		tr.Close()
	}
}

// SendRegistryGarbage sends raw bytes on a registry stream and waits until
// the registry closes the connection.
func SendGarbage(ctx context.Context, at *net.UDPAddr, pin resolve.Fingerprint, garbage []byte) error {
	qc, err := quic.DialAddr(ctx, at.String(), registryClientTLS(pin), nil)
	if err != nil {
		return err
	}
	defer qc.CloseWithError(0, "")
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	if _, err := str.Write(garbage); err != nil {
		return err
	}
	select {
	case <-qc.Context().Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A proof is bound to the connection it was made on: replayed on another,
// it is refused.
func TestRegistryReplayedProof(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Listen("127.0.0.1:0", Config{})
	require.NoError(t, err)
	defer r.Close()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)

	var sessions [2]*regSession
	var clients [2]*Client
	for i := range sessions {
		clients[i], err = NewClient(r.Addr().String(), ClientConfig{Key: r.Key()})
		require.NoError(t, err)
		defer clients[i].Close()
		sessions[i], err = clients[i].session(ctx)
		require.NoError(t, err)
	}
	fp, err := resolve.FingerprintOf(key.Public())
	require.NoError(t, err)
	ep := resolve.Endpoint{Addr: netip.MustParseAddrPort("127.0.0.1:4000"), Key: fp}
	proof, err := resolve.Sign(key, proofDomain, sessions[0].ekm, "replay.demo", ep)
	require.NoError(t, err)
	register := &regwire.Frame{
		Type: regwire.TypeRegister, Service: "replay.demo",
		Endpoint:  regwire.Endpoint{Addr: ep.Addr, Key: ep.Key},
		PublicKey: proof.PublicKey, Signature: proof.Signature,
	}
	_, err = sessions[1].call(ctx, register, nil)
	require.ErrorIs(t, err, resolve.ErrUnsigned)

	// A proof for another endpoint is refused too.
	forged := *register
	forged.Endpoint.Addr = netip.MustParseAddrPort("127.0.0.1:6666")
	_, err = sessions[0].call(ctx, &forged, nil)
	require.ErrorIs(t, err, resolve.ErrUnsigned)

	// The proof on its own connection is accepted.
	f, err := sessions[0].call(ctx, register, nil)
	require.NoError(t, err)
	require.Equal(t, byte(regwire.TypeLease), f.Type)
}
