package sal

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoadKeyMakesThenKeeps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host.key")
	k1, err := LoadKey(path)
	require.NoError(t, err)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "a private key is the owner's alone")
	k2, err := LoadKey(path)
	require.NoError(t, err)
	require.Equal(t, k1.Public(), k2.Public(), "the second load reads the first key")

	id1, err := KeyID(k1.Public())
	require.NoError(t, err)
	id2, err := KeyID(k2.Public())
	require.NoError(t, err)
	require.Equal(t, id1, id2)
	require.Regexp(t, `^rk--[a-z2-7]{52}$`, id1.String())
}

func TestLoadKeyRacingMakersAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host.key")
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			k, err := LoadKey(path)
			require.NoError(t, err)
			id, err := KeyID(k.Public())
			require.NoError(t, err)
			ids[i] = id.String()
		})
	}
	wg.Wait()
	for _, id := range ids {
		require.Equal(t, ids[0], id, "every maker ends with the one key on disk")
	}
	left, err := filepath.Glob(filepath.Join(filepath.Dir(path), ".roam-key-*"))
	require.NoError(t, err)
	require.Empty(t, left, "no temporary file is left behind")
}

func TestLoadKeyRefusesWhatIsNotAKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(x)
	require.NoError(t, err)
	for name, path := range map[string]string{
		"empty":         write("empty", nil),
		"text":          write("text", []byte("hello\n")),
		"certificate":   write("cert", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})),
		"garbled PKCS8": write("garbled", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})),
		"X25519":        write("x25519", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	} {
		before, _ := os.ReadFile(path)
		_, err := LoadKey(path)
		require.ErrorIs(t, err, ErrBadKeyFile, name)
		require.Contains(t, err.Error(), path, "%s: the error names the file", name)
		after, _ := os.ReadFile(path)
		require.Equal(t, before, after, "%s: the file is left as it was, not replaced by a new key", name)
	}

	_, err = LoadKey(filepath.Join(dir, "no", "such", "dir", "key"))
	require.Error(t, err, "a key cannot be made where the directory is missing")
	require.NotErrorIs(t, err, ErrBadKeyFile)

	if os.Geteuid() != 0 { // root reads anything
		p := write("unreadable", []byte("x"))
		require.NoError(t, os.Chmod(p, 0))
		_, err = LoadKey(p)
		require.ErrorIs(t, err, os.ErrPermission)
	}
}
