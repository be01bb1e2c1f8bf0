package soft_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pskvault/pskvault/backends/soft"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
	"github.com/pskvault/pskvault/vault/backendtest"
)

func open(t *testing.T, dir string, init bool) vault.Backend {
	t.Helper()
	b, err := soft.Open(context.Background(), vault.BackendConfig{URI: "soft", StateDir: dir, Init: init})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, open(t, t.TempDir(), true))
}

func TestKEKFileIsPrivate(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, true)
	st, err := os.Stat(filepath.Join(dir, soft.KEKFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("KEK mode %04o, want 0600", st.Mode().Perm())
	}
	if err := os.Chmod(filepath.Join(dir, soft.KEKFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := soft.Open(context.Background(), vault.BackendConfig{URI: "soft", StateDir: dir}); err == nil {
		t.Fatal("opened a world-readable KEK")
	}
}

func TestHandleBoundToKEK(t *testing.T) {
	a, b := open(t, t.TempDir(), true), open(t, t.TempDir(), true)
	h, err := a.StoreKey(context.Background(), vault.StoreRequest{PRK: make([]byte, 32), Hash: importer.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.HMAC(context.Background(), vault.KeyRef{Handle: h, Hash: importer.SHA256}, []byte("x")); !errors.Is(err, vault.ErrKeyNotFound) {
		t.Fatalf("other vault's KEK opened the handle: %v", err)
	}
	if _, err := a.HMAC(context.Background(), vault.KeyRef{Handle: h, Hash: importer.SHA384}, []byte("x")); !errors.Is(err, vault.ErrKeyNotFound) {
		t.Fatalf("handle used with the wrong hash: %v", err)
	}
	h[len(h)-1] ^= 1
	if _, err := a.HMAC(context.Background(), vault.KeyRef{Handle: h, Hash: importer.SHA256}, []byte("x")); !errors.Is(err, vault.ErrKeyNotFound) {
		t.Fatalf("tampered handle accepted: %v", err)
	}
}

func TestRefusesOptions(t *testing.T) {
	if _, err := soft.Open(context.Background(), vault.BackendConfig{URI: "soft:x=1", StateDir: t.TempDir(), Init: true}); !errors.Is(err, vault.ErrUnsupported) {
		t.Fatalf("got %v", err)
	}
}
