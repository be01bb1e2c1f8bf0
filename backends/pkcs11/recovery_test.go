//go:build cgo

package pkcs11

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// moveTokenAway moves the shared token's directory away (what an
// unplugged token or an unmounted store looks like to SoftHSM2) and
// returns the function that puts it back; a test that fails midway still
// gets it back at cleanup.
func moveTokenAway(t *testing.T) (back func()) {
	t.Helper()
	dir := filepath.Join(needToken(t).Dir, "tokens")
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	done := false
	back = func() {
		if done {
			return
		}
		done = true
		if err := os.Rename(dir+".away", dir); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(back)
	return back
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 20s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTokenAwayIsNotGone: with the token's store gone, SoftHSM2 answers
// searches with nothing at all. HMAC, DeleteKey and Keys must report the
// backend unavailable (never "key not found", never a successful delete),
// and once the store is back the same backend works again without being
// reopened, with the key still there.
func TestTokenAwayIsNotGone(t *testing.T) {
	b, err := openTagged(bg, needToken(t).URI(), []byte("vault-id-for-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	handle, prk := storeTestKey(t, b, importer.SHA256)
	key := vault.KeyRef{Handle: handle, Hash: importer.SHA256}
	want, _ := importer.SoftwareMAC(importer.SHA256, prk)([]byte("data"))
	if _, err := b.HMAC(bg, key, []byte("data")); err != nil {
		t.Fatal(err)
	}

	back := moveTokenAway(t)
	for _, op := range []struct {
		name string
		f    func() error
	}{
		{"HMAC", func() error { _, err := b.HMAC(bg, key, []byte("data")); return err }},
		{"DeleteKey", func() error { return b.DeleteKey(bg, key) }},
		{"Keys", func() error { _, err := b.Keys(bg); return err }},
	} {
		// Twice: once on the sessions of before, once after a reset.
		for i := 0; i < 2; i++ {
			err := op.f()
			if !errors.Is(err, vault.ErrBackendUnavailable) || errors.Is(err, vault.ErrKeyNotFound) {
				t.Fatalf("%s #%d with the token away: %v, want ErrBackendUnavailable and not ErrKeyNotFound", op.name, i, err)
			}
			time.Sleep(retryEvery + 10*time.Millisecond)
		}
	}

	back()
	eventually(t, "HMAC after the token came back", func() error {
		got, err := b.HMAC(bg, key, []byte("data"))
		if err == nil && !bytes.Equal(got, want) {
			t.Fatal("HMAC after the token came back: mismatch")
		}
		return err
	})
	keys, err := b.Keys(bg)
	if err != nil || !slices.ContainsFunc(keys, func(h []byte) bool { return bytes.Equal(h, handle) }) {
		t.Fatalf("Keys after the token came back: %d keys, %v; the stored key is missing", len(keys), err)
	}
	// And a key truly destroyed is "not found", with the token present.
	if err := b.DeleteKey(bg, key); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HMAC(bg, key, []byte("data")); !errors.Is(err, vault.ErrKeyNotFound) {
		t.Fatalf("HMAC of a destroyed key: %v, want ErrKeyNotFound", err)
	}
}

// TestKeysListsThisVaultOnly: Keys returns exactly the handles of the keys
// made for this vault ID, not those of another vault on the same token nor
// of keys made without one.
func TestKeysListsThisVaultOnly(t *testing.T) {
	uri := needToken(t).URI()
	a, err := openTagged(bg, uri, []byte("vault-a-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	other, err := openTagged(bg, uri, []byte("vault-b-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	untagged := openToken(t, "")
	var mine [][]byte
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384, importer.SHA256} {
		handle, _ := storeTestKey(t, a, h)
		mine = append(mine, handle)
	}
	storeTestKey(t, other, importer.SHA256)
	storeTestKey(t, untagged, importer.SHA384)
	got, err := a.Keys(bg)
	if err != nil {
		t.Fatal(err)
	}
	cmp := func(x, y []byte) int { return bytes.Compare(x, y) }
	slices.SortFunc(got, cmp)
	slices.SortFunc(mine, cmp)
	if !slices.EqualFunc(got, mine, bytes.Equal) {
		t.Fatalf("Keys = %x, want %x", got, mine)
	}
	if keys, err := untagged.Keys(bg); err != nil || len(keys) != 0 {
		t.Fatalf("Keys without a vault ID: %x, %v; want none", keys, err)
	}
}

// TestChangedPINFile: a PIN file whose PIN the token refuses is presented
// once, however often the backend then needs to log in; once the file
// holds another PIN, the next login attempt uses it, without a restart.
func TestChangedPINFile(t *testing.T) {
	tok := needToken(t)
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(tok.PIN()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := Open(bg, "pkcs11:token="+tok.Label+"?module-path="+tok.Module+"&pin-source=file:"+pinFile)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	handle, _ := storeTestKey(t, b, importer.SHA256)
	key := vault.KeyRef{Handle: handle, Hash: importer.SHA256}

	if err := os.WriteFile(pinFile, []byte("wrong-pin-0000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, b)            // see waitIndexed
	b.p.CloseAllSessions(b.slot) // logs the application out: the next operation logs in
	before := b.logins.Load()
	for i := 0; i < 5; i++ {
		_, err := b.HMAC(bg, key, []byte("x"))
		if !errors.Is(err, ErrPIN) || !errors.Is(err, vault.ErrBackendUnavailable) {
			t.Fatalf("HMAC #%d with a wrong PIN file: %v, want ErrPIN and ErrBackendUnavailable", i, err)
		}
		time.Sleep(retryEvery + 10*time.Millisecond) // each attempt may try to log in again
	}
	if n := b.logins.Load() - before; n != 1 {
		t.Fatalf("the refused PIN was presented %d times, want once", n)
	}
	if err := os.WriteFile(pinFile, []byte(tok.PIN()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "HMAC after the PIN file was fixed", func() error { _, err := b.HMAC(bg, key, []byte("x")); return err })
	if n := b.logins.Load() - before; n != 2 {
		t.Fatalf("%d logins, want the refused one and the fixed one", n)
	}
}
