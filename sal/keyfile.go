package sal

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/roamnet/roam/resolve"
)

// LoadKey reads a Host's identity (Config.Key) from a PEM file holding a
// PKCS #8 private key, and makes an Ed25519 one there (mode 0600, in a
// file written whole or not at all) when the file does not exist. A
// provider that keeps its key across restarts keeps its service names: a
// registry binds a name to the key of its first registration, and refuses
// any other key until the binding lapses.
//
// A file that exists but holds no usable key fails with an error wrapping
// ErrBadKeyFile, never with a fresh key: a typo must not change a
// service's identity. Other failures wrap the os error (fs.ErrPermission).
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return makeKeyFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("sal: key file: %w", err)
	}
	return parseKey(path, data)
}

// KeyID returns the key-only service ID, "rk--<fingerprint>", that names
// whatever a Host with this key serves, and that a registry or DNS can
// pin: the ID is self-certifying, so only the holder of key may serve it.
func KeyID(key crypto.PublicKey) (ServiceID, error) {
	fp, err := resolve.FingerprintOf(key)
	if err != nil {
		return ServiceID{}, err
	}
	return NewServiceID("", fp)
}

func parseKey(path string, data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s: no PEM \"PRIVATE KEY\" block", ErrBadKeyFile, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKeyFile, path, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %s: a %T cannot sign", ErrBadKeyFile, path, k)
	}
	if _, err := resolve.FingerprintOf(signer.Public()); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKeyFile, path, err)
	}
	return signer, nil
}

// makeKeyFile writes a new Ed25519 key to path through a temporary file
// and a link, so that two processes starting at once end with one key
// between them rather than each with its own, or with a torn file.
func makeKeyFile(path string) (crypto.Signer, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tmp, err := os.CreateTemp(filepath.Dir(path), ".roam-key-*")
	if err != nil {
		return nil, fmt.Errorf("sal: key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(out)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("sal: key file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadKey(path) // another process made it first: use theirs
		}
		return nil, fmt.Errorf("sal: key file: %w", err)
	}
	return key, nil
}
