package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/internal/swtpmsim"
	"github.com/pskvault/pskvault/vault"
)

// authFile writes a random auth-source secret and returns its source.
func authFile(t *testing.T, mode os.FileMode) string {
	t.Helper()
	secret := make([]byte, 32)
	rand.Read(secret)
	p := filepath.Join(t.TempDir(), "tpm-auth")
	if err := os.WriteFile(p, secret, mode); err != nil {
		t.Fatal(err)
	}
	return "file:" + p
}

func openWith(t *testing.T, sim *swtpmsim.Sim, extra string) *Backend {
	t.Helper()
	b, err := Open(context.Background(), sim.URI()+extra)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestPerKeyAuthValue: with auth-source, created, PCR-bound and wrapped
// keys all get an auth value; the same handles are useless to a backend on
// the same TPM without the secret or with another one, and each refusal
// says why.
func TestPerKeyAuthValue(t *testing.T) {
	sim := swtpmsim.Start(t)
	src := authFile(t, 0o600)
	b := openWith(t, sim, ",auth-source="+src)

	plain, prk := store(t, b, importer.SHA256, nil)
	bound, boundPRK := store(t, b, importer.SHA384, map[string]string{"pcrs": "7"})
	pub, err := b.ParentPublic(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, wprk := newPRK(t, importer.SHA256)
	blob, err := Wrap(pub, importer.SHA256, wprk)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := b.ImportWrapped(context.Background(), blob, importer.SHA256, nil)
	if err != nil {
		t.Fatalf("ImportWrapped with auth-source: %v", err)
	}
	wrapped := vault.KeyRef{Handle: wh, Hash: importer.SHA256}
	keys := []struct {
		name string
		ref  vault.KeyRef
		prk  []byte
	}{{"created", plain, prk}, {"pcr-bound", bound, boundPRK}, {"wrapped", wrapped, wprk}}
	for _, k := range keys {
		if !bytes.HasPrefix(k.ref.Handle, handleMagicV2) {
			t.Fatalf("%s key: handle is not version 2 (no auth salt)", k.name)
		}
		checkHMAC(t, b, k.ref, k.prk, []byte("with the secret"))
	}

	b.Close() // swtpm serves one connection at a time

	// The same handles on the same TPM: no secret, then another secret.
	for _, c := range []struct{ name, extra, want string }{
		{"no auth-source", "", "names none"},
		{"another secret", ",auth-source=" + authFile(t, 0o600), "refused this key's auth value"},
	} {
		other := openWith(t, sim, c.extra)
		for _, k := range keys {
			_, err := other.HMAC(context.Background(), k.ref, []byte("x"))
			if !errors.Is(err, vault.ErrKeyPolicy) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s, %s key: got %v, want ErrKeyPolicy saying %q", c.name, k.name, err, c.want)
			}
		}
		other.Close()
	}
	// No lockout counted: the right secret still works afterwards.
	again := openWith(t, sim, ",auth-source="+src)
	for _, k := range keys {
		checkHMAC(t, again, k.ref, k.prk, []byte("after refusals"))
	}
}

func TestAuthSourceChecked(t *testing.T) {
	sim := swtpmsim.Start(t)
	for _, c := range []struct{ name, source, want string }{
		{"group-readable", authFile(t, 0o640), "chmod 600"},
		{"missing", "file:" + filepath.Join(t.TempDir(), "none"), "reading auth-source"},
		{"unknown kind", "env:X", "unknown auth-source"},
	} {
		_, err := Open(context.Background(), sim.URI()+",auth-source="+c.source)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error saying %q", c.name, err, c.want)
		}
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("tooshort\n"), 0o600)
	if _, err := Open(context.Background(), sim.URI()+",auth-source=file:"+short); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("8-byte secret: got %v", err)
	}
}

// TestAuthValuesHoldNoZeroByte: go-tpm v0.9.8 cuts an HMAC session's auth
// value at its first zero byte, so raw 32-byte auth values made about 1
// PCR-bound key in 9 unusable. 100 PCR-bound keys with auth values must all
// pass their self-test (with the old encoding, all 100 would pass with a
// probability of about 4 in a million).
func TestAuthValuesHoldNoZeroByte(t *testing.T) {
	sim := swtpmsim.Start(t)
	b := openWith(t, sim, ",auth-source="+authFile(t, 0o600))
	for i := 0; i < 100; i++ {
		_, prk := newPRK(t, importer.SHA256)
		ref, err := b.StoreKey(context.Background(), vault.StoreRequest{PRK: prk, Hash: importer.SHA256, Label: "z", Params: map[string]string{"pcrs": "7"}})
		if err != nil {
			t.Fatalf("PCR-bound key %d with an auth value: %v", i, err)
		}
		k, err := parseHandle(ref, importer.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		auth, _ := b.keyAuth(k)
		if len(auth) != 32 || bytes.IndexByte(auth, 0) >= 0 {
			t.Fatalf("auth value of %d bytes with a zero byte at %d", len(auth), bytes.IndexByte(auth, 0))
		}
	}
}
