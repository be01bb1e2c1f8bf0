// Package soft is pskvault's embedded software backend, for development and
// for hosts with neither a TPM nor an HSM.
//
// Each PRK is sealed with AES-256-GCM under a key-encryption key (KEK) kept in
// soft.kek (0600) in the vault's 0700 state directory; the sealed PRK is the
// handle the vault records. Anyone who can read both the state directory and
// the KEK file has the keys: this backend protects keys at rest against a
// copied database, not against the host's root.
package soft

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// KEKFile is the key-encryption key's file name in the state directory.
const KEKFile = "soft.kek"

const (
	handleVersion = 1
	kekLen        = 32
)

func init() { vault.RegisterBackend("soft", Open) }

// Backend is the software backend.
type Backend struct {
	aead cipher.AEAD
	path string
}

// Open opens (or, at init, creates) the KEK in cfg.StateDir. The URI takes
// no options: "soft".
func Open(_ context.Context, cfg vault.BackendConfig) (vault.Backend, error) {
	if cfg.URI != "soft" {
		return nil, fmt.Errorf("%w: soft backend takes no options, got %q", vault.ErrUnsupported, cfg.URI)
	}
	path := filepath.Join(cfg.StateDir, KEKFile)
	kek, err := loadKEK(path, cfg.Init)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Backend{aead: aead, path: path}, nil
}

func loadKEK(path string, create bool) ([]byte, error) {
	if create {
		kek := make([]byte, kekLen)
		if _, err := rand.Read(kek); err != nil {
			return nil, fmt.Errorf("generate KEK: %w", err)
		}
		f, err := vault.OpenStateFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			clear(kek)
			return nil, fmt.Errorf("create KEK file: %w", err)
		}
		_, werr := f.Write(kek)
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			clear(kek)
			return nil, fmt.Errorf("write KEK file %s: %w", path, err)
		}
		return kek, nil
	}
	// No link followed, a regular file of the daemon's user with one link
	// (vault.OpenStateFile): a KEK someone else planted is never used.
	f, err := vault.OpenStateFile(path, os.O_RDONLY, 0)
	if errors.Is(err, vault.ErrUnsafeState) {
		return nil, fmt.Errorf("KEK file: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: open KEK file: %w", vault.ErrBackendUnavailable, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("KEK file %s has mode %04o; it must be 0600", path, st.Mode().Perm())
	}
	kek := make([]byte, kekLen+1)
	n, err := io.ReadFull(f, kek)
	if n != kekLen || !errors.Is(err, io.ErrUnexpectedEOF) {
		clear(kek)
		return nil, fmt.Errorf("KEK file %s is damaged: want exactly %d bytes", path, kekLen)
	}
	return kek[:kekLen], nil
}

// Info describes the backend.
func (b *Backend) Info() vault.BackendInfo {
	return vault.BackendInfo{
		Name:        "soft",
		Description: "software store, PRKs sealed with AES-256-GCM under " + b.path,
		Hashes:      []importer.Hash{importer.SHA256, importer.SHA384},
		HashNames:   []string{"sha256", "sha384"},
	}
}

// aad binds a sealed PRK to its format version and hash.
func aad(h importer.Hash) []byte { return []byte{handleVersion, byte(h)} }

// StoreKey seals the PRK: handle = version || hash || nonce || GCM(KEK, PRK).
func (b *Backend) StoreKey(_ context.Context, req vault.StoreRequest) ([]byte, error) {
	if len(req.Params) > 0 {
		keys := make([]string, 0, len(req.Params))
		for k := range req.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("%w: soft backend has no parameters (got %v)", vault.ErrUnsupported, keys)
	}
	if !req.Hash.Valid() || len(req.PRK) != req.Hash.Size() {
		return nil, fmt.Errorf("%w: PRK must be %d bytes for %s", importer.ErrBadPRK, req.Hash.Size(), req.Hash)
	}
	ns := b.aead.NonceSize()
	out := make([]byte, 2+ns, 2+ns+len(req.PRK)+b.aead.Overhead())
	out[0], out[1] = handleVersion, byte(req.Hash)
	if _, err := rand.Read(out[2 : 2+ns]); err != nil {
		return nil, err
	}
	return b.aead.Seal(out, out[2:2+ns], req.PRK, aad(req.Hash)), nil
}

// HMAC opens the sealed PRK, computes one HMAC, and wipes the PRK.
func (b *Backend) HMAC(_ context.Context, key vault.KeyRef, data []byte) ([]byte, error) {
	h := key.Hash
	ns := b.aead.NonceSize()
	hd := key.Handle
	if len(hd) != 2+ns+h.Size()+b.aead.Overhead() || hd[0] != handleVersion || importer.Hash(hd[1]) != h || !h.Valid() {
		return nil, fmt.Errorf("%w: malformed soft handle", vault.ErrKeyNotFound)
	}
	var buf [64]byte
	prk, err := b.aead.Open(buf[:0], hd[2:2+ns], hd[2+ns:], aad(h))
	if err != nil {
		return nil, fmt.Errorf("%w: sealed PRK does not open under this vault's KEK", vault.ErrKeyNotFound)
	}
	// importer.HMAC, not crypto/hmac: its pads (which XOR back to the PRK)
	// are wiped before it returns.
	out := importer.HMAC(h, prk, data)
	clear(buf[:])
	return out, nil
}

// DeleteKey has nothing to do: the sealed PRK lives only in the vault record,
// which the vault deletes.
func (b *Backend) DeleteKey(context.Context, vault.KeyRef) error { return nil }

// KeyInHandle: the handle is the key sealed under the KEK (vault.KeyInHandle).
func (b *Backend) KeyInHandle() bool { return true }

// Close releases nothing; the KEK bytes were wiped at Open.
func (b *Backend) Close() error { return nil }
