//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// indexKey is a key a test made, with its PRK to check HMACs against.
type indexKey struct {
	ref vault.KeyRef
	prk []byte
}

// makeIndexKeys stores n keys for vaultID with a backend of their own,
// closed again (so the next open starts with nothing in its index).
func makeIndexKeys(t *testing.T, vaultID []byte, n int) []indexKey {
	t.Helper()
	a, err := openTagged(bg, needToken(t).URI(), vaultID)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var keys []indexKey
	for i := 0; i < n; i++ {
		h := importer.SHA256
		if i%3 == 2 {
			h = importer.SHA384
		}
		epsk := make([]byte, 32)
		rand.Read(epsk)
		prk, _ := importer.Extract(h, epsk)
		handle, err := a.StoreKey(bg, vault.StoreRequest{PRK: bytes.Clone(prk), Hash: h, Label: "index-test"})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, indexKey{vault.KeyRef{Handle: handle, Hash: h}, prk})
	}
	t.Cleanup(func() {
		c, err := openTagged(bg, needToken(t).URI(), vaultID)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for _, k := range keys {
			if err := c.DeleteKey(bg, k.ref); err != nil {
				t.Error(err)
			}
		}
	})
	return keys
}

// checkHMAC computes an HMAC with key through b and compares it with the
// software HMAC under the key's PRK.
func checkHMAC(t *testing.T, b *Backend, k indexKey) {
	t.Helper()
	got, err := b.HMAC(bg, k.ref, []byte("index test"))
	if err != nil {
		t.Fatalf("HMAC %x: %v", k.ref.Handle, err)
	}
	want, _ := importer.SoftwareMAC(k.ref.Hash, k.prk)([]byte("index test"))
	if !bytes.Equal(got, want) {
		t.Fatalf("HMAC %x: mismatch", k.ref.Handle)
	}
}

// waitIndexed waits until b's index is complete for its current
// generation, so that the enumeration is not inside a call on one of its
// sessions. Tests call it before they close the backend's sessions or
// log it out behind its back: SoftHSM2 frees a session's state in
// C_CloseAllSessions (and a login's object handles in C_Logout) while
// another thread may be inside a call on that session — a use-after-free
// in the module, which TestSessionRecovery hit as heap corruption
// ("malloc_consolidate(): invalid chunk size") when the enumeration that
// follows every reset ran into its next C_CloseAllSessions. The backend
// itself never closes a session in use (reset stops the enumeration and
// takes the pool's lock exclusively first).
func waitIndexed(t *testing.T, b *Backend) {
	t.Helper()
	eventually(t, "object index complete", func() error {
		b.mu.RLock()
		gen := b.gen
		b.mu.RUnlock()
		if g, complete, _ := b.idxState(); g != gen || !complete {
			return errors.New("not yet")
		}
		return nil
	})
}

// TestFirstUseDoesNotSearch: after a (re)open, the first use of each key
// finds its object in the index — filled in the background at Open, or
// by Keys as the vault's reconciliation calls it — without a
// C_FindObjectsInit per key (the search that made a first use cost
// ~40 µs per token object on SoftHSM2). Every HMAC is checked against
// the PRK, so no key is confused with another.
func TestFirstUseDoesNotSearch(t *testing.T) {
	vaultID := []byte("idx1-tag-test-vault")
	keys := makeIndexKeys(t, vaultID, 12)
	for _, viaKeys := range []bool{false, true} {
		name := "background"
		if viaKeys {
			name = "keys"
		}
		t.Run(name, func(t *testing.T) {
			b, err := openTagged(bg, needToken(t).URI(), vaultID)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if viaKeys {
				listed, err := b.Keys(bg)
				if err != nil {
					t.Fatal(err)
				}
				if len(listed) != len(keys) {
					t.Fatalf("Keys listed %d keys, want %d", len(listed), len(keys))
				}
			}
			waitIndexed(t, b)
			before := b.finds.Load()
			// Keys after the listing (the vault may call it well after
			// Open) answers from the index: no second listing.
			listed, err := b.Keys(bg)
			if err != nil || len(listed) != len(keys) {
				t.Fatalf("Keys: %d keys, %v; want %d", len(listed), err, len(keys))
			}
			for _, k := range keys {
				checkHMAC(t, b, k)
			}
			if n := b.finds.Load() - before; n != 0 {
				t.Fatalf("Keys and the first use of %d keys made %d token searches, want 0", len(keys), n)
			}
		})
	}
}

// TestIndexDestroyedBehindBack: a key destroyed by someone else after the
// index was filled — used before (its handle verified) or not — gives a
// clean ErrKeyNotFound through a fresh search, never another key's HMAC;
// the other keys keep working from the index.
func TestIndexDestroyedBehindBack(t *testing.T) {
	vaultID := []byte("idx2-tag-test-vault")
	keys := makeIndexKeys(t, vaultID, 4)
	b, err := openTagged(bg, needToken(t).URI(), vaultID)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitIndexed(t, b)
	checkHMAC(t, b, keys[0]) // keys[0] verified and hot; keys[1] never used
	s := rawSession(t, b)
	for _, k := range keys[:2] {
		if err := b.p.DestroyObject(s, findByHandle(t, b, s, k.ref.Handle)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys[:2] {
		before := b.finds.Load()
		_, err := b.HMAC(bg, k.ref, []byte("x"))
		if !errors.Is(err, vault.ErrKeyNotFound) {
			t.Fatalf("HMAC with a key destroyed behind the backend's back: %v, want ErrKeyNotFound", err)
		}
		if b.finds.Load() == before {
			t.Fatal("a destroyed key was reported missing without looking on the token")
		}
		if e, ok := b.indexGet(idOf(t, k.ref.Handle)); ok {
			t.Fatalf("index still holds the destroyed key's handle %d", e.obj)
		}
	}
	before := b.finds.Load()
	for _, k := range keys[2:] {
		checkHMAC(t, b, k)
	}
	if n := b.finds.Load() - before; n != 0 {
		t.Fatalf("%d searches for keys in the index", n)
	}
	// DeleteKey of a key the backend made drops it from the index too.
	if err := b.DeleteKey(bg, keys[2].ref); err != nil {
		t.Fatal(err)
	}
	if _, err := b.HMAC(bg, keys[2].ref, []byte("x")); !errors.Is(err, vault.ErrKeyNotFound) {
		t.Fatalf("HMAC after DeleteKey: %v, want ErrKeyNotFound", err)
	}
	checkHMAC(t, b, keys[3])
}

// TestIndexNoStaleHandleAfterReinit: handles belong to one login and one
// C_Initialize. When the token goes away and comes back the backend
// finalizes and initializes the module again, after which SoftHSM2 hands
// out handle numbers afresh, in another order: an index entry kept across
// that would sign with whichever key now has the number. Every key must
// still give its own HMAC, from a new index.
func TestIndexNoStaleHandleAfterReinit(t *testing.T) {
	vaultID := []byte("idx3-tag-test-vault")
	keys := makeIndexKeys(t, vaultID, 10)
	b, err := openTagged(bg, needToken(t).URI(), vaultID)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitIndexed(t, b)
	for _, k := range keys {
		checkHMAC(t, b, k)
	}
	old := map[string]p11.ObjectHandle{}
	for _, k := range keys {
		e, _ := b.indexGet(idOf(t, k.ref.Handle))
		old[string(k.ref.Handle)] = e.obj
	}
	gen0, _, _ := b.idxState()

	back := moveTokenAway(t)
	if _, err := b.HMAC(bg, keys[0].ref, []byte("x")); !errors.Is(err, vault.ErrBackendUnavailable) {
		t.Fatalf("HMAC with the token away: %v, want ErrBackendUnavailable", err)
	}
	back()
	eventually(t, "HMAC after the token came back", func() error {
		_, err := b.HMAC(bg, keys[1].ref, []byte("x"))
		return err
	})
	if gen, _, _ := b.idxState(); gen == gen0 {
		t.Fatal("the index survived the token's return")
	}
	moved := 0
	for _, k := range keys {
		checkHMAC(t, b, k)
		e, _ := b.indexGet(idOf(t, k.ref.Handle))
		if e.obj != old[string(k.ref.Handle)] {
			moved++
		}
	}
	t.Logf("%d of %d keys have another handle number after the re-initialization", moved, len(keys))
}

// TestIndexSharedID: two generic secrets with the same CKA_ID (made behind
// the backend's back) are never guessed between, whether the index saw
// both or not.
func TestIndexSharedID(t *testing.T) {
	vaultID := []byte("idx4-tag-test-vault")
	keys := makeIndexKeys(t, vaultID, 2)
	a, err := openTagged(bg, needToken(t).URI(), vaultID)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	s := rawSession(t, a)
	prk := make([]byte, 32)
	id := idOf(t, keys[0].ref.Handle)
	twin, err := a.p.CreateObject(s, append(keyTemplate(id, "twin", true), p11.NewAttribute(p11.CKA_VALUE, prk)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.p.DestroyObject(s, twin)

	b, err := openTagged(bg, needToken(t).URI(), vaultID)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitIndexed(t, b)
	if _, err := b.HMAC(bg, keys[0].ref, []byte("x")); err == nil || !strings.Contains(err.Error(), "refusing to guess") {
		t.Fatalf("HMAC with two objects sharing the key's CKA_ID: %v, want a refusal", err)
	}
	checkHMAC(t, b, keys[1])
}

func idOf(t *testing.T, handle []byte) []byte {
	t.Helper()
	_, id, err := decodeHandle(handle)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestReadIDs: the batched CKA_ID read (one C_GetAttributeValue per object
// through the module's own function list) agrees with miekg/pkcs11's,
// leaves out IDs of another length, and reports a destroyed object.
func TestReadIDs(t *testing.T) {
	b := openToken(t, "")
	if b.mod.ids.fn == nil {
		t.Fatal("C_GetAttributeValue not found in the loaded module: the enumeration would read each ID twice")
	}
	s := rawSession(t, b)
	var objs []p11.ObjectHandle
	for _, n := range []int{idLen, 4, 32, idLen, 0} {
		id := make([]byte, n)
		rand.Read(id)
		o, err := b.p.CreateObject(s, append(keyTemplate(id, "readids", false), p11.NewAttribute(p11.CKA_VALUE, make([]byte, 32))))
		if err != nil {
			t.Fatal(err)
		}
		defer b.p.DestroyObject(s, o)
		objs = append(objs, o)
	}
	gone, err := b.p.CreateObject(s, append(keyTemplate(make([]byte, idLen), "readids", false), p11.NewAttribute(p11.CKA_VALUE, make([]byte, 32))))
	if err != nil {
		t.Fatal(err)
	}
	b.p.DestroyObject(s, gone)
	objs = append(objs, gone)

	ids, errs := b.mod.ids.readIDs(b.p, s, objs)
	for i, o := range objs[:len(objs)-1] {
		want, err := readID(b.p, s, o)
		if err != nil || errs[i] != nil {
			t.Fatalf("object %d: %v / %v", i, err, errs[i])
		}
		if len(want) != idLen {
			want = nil
		}
		if !bytes.Equal(ids[i], want) || (want == nil) != (ids[i] == nil) {
			t.Fatalf("object %d: batched read %x, miekg/pkcs11 %x", i, ids[i], want)
		}
	}
	if last := len(objs) - 1; !isRV(errs[last], p11.CKR_OBJECT_HANDLE_INVALID) {
		t.Fatalf("destroyed object: %v, want CKR_OBJECT_HANDLE_INVALID", errs[last])
	}
}

// TestDeleteUsesIndex: with the index complete, DeleteKey destroys a key
// by its handle without searching the token (a search per delete is
// O(N) on SoftHSM2), and the key is gone from the token; a key the index
// does not hold (already deleted, or destroyed behind the backend's back)
// is still looked for, and its absence is success.
func TestDeleteUsesIndex(t *testing.T) {
	vaultID := []byte("idx5-tag-test-vault")
	keys := makeIndexKeys(t, vaultID, 4)
	b, err := openTagged(bg, needToken(t).URI(), vaultID)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitIndexed(t, b)
	s := rawSession(t, b)
	checkHMAC(t, b, keys[0])
	before := b.finds.Load()
	for _, k := range keys[:3] {
		if err := b.DeleteKey(bg, k.ref); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.finds.Load() - before; n != 0 {
		t.Fatalf("deleting 3 indexed keys made %d token searches, want 0", n)
	}
	for _, k := range keys[:3] {
		objs, err := findObjects(b.p, s, []*p11.Attribute{p11.NewAttribute(p11.CKA_ID, idOf(t, k.ref.Handle))}, 2)
		if err != nil || len(objs) != 0 {
			t.Fatalf("after DeleteKey: %d objects with the key's CKA_ID (%v)", len(objs), err)
		}
	}
	// Deleted already: looked for, not found, success.
	before = b.finds.Load()
	if err := b.DeleteKey(bg, keys[0].ref); err != nil {
		t.Fatalf("DeleteKey of a deleted key: %v", err)
	}
	if b.finds.Load() == before {
		t.Fatal("a key missing from the index was taken for gone without a search")
	}
	// Destroyed behind the backend's back while indexed.
	if err := b.p.DestroyObject(s, findByHandle(t, b, s, keys[3].ref.Handle)); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteKey(bg, keys[3].ref); err != nil {
		t.Fatalf("DeleteKey of a key destroyed behind the backend's back: %v", err)
	}
}

// TestWrappedImportFindsWrappingKeyOnce: a run of wrapped imports under
// one wrapping key searches the token for it once, not per import (a
// search is O(N) on SoftHSM2); a wrapping key destroyed behind the
// backend's back is looked for again and reported missing, cleanly.
func TestWrappedImportFindsWrappingKeyOnce(t *testing.T) {
	b := openToken(t, "")
	kek := make([]byte, 32)
	rand.Read(kek)
	label := "idx-wrapping-key-" + hex.EncodeToString(kek[:4])
	if err := b.ImportWrappingKey(bg, label, kek); err != nil {
		t.Fatal(err)
	}
	s := rawSession(t, b)
	wk, err := findObjects(b.p, s, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, label)}, 2)
	if err != nil || len(wk) != 1 {
		t.Fatalf("wrapping key: %d objects, %v", len(wk), err)
	}
	destroyed := false
	t.Cleanup(func() {
		if !destroyed {
			b.p.DestroyObject(s, wk[0])
		}
	})
	imp := func() (vault.KeyRef, []byte, error) {
		epsk := make([]byte, 32)
		rand.Read(epsk)
		blob, err := WrapEPSK(kek, importer.SHA256, epsk)
		if err != nil {
			t.Fatal(err)
		}
		handle, err := b.ImportWrapped(bg, blob, importer.SHA256, map[string]string{"wrapping-key": label})
		prk, _ := importer.Extract(importer.SHA256, epsk)
		return vault.KeyRef{Handle: handle, Hash: importer.SHA256}, prk, err
	}
	waitIndexed(t, b)
	before := b.finds.Load()
	for i := 0; i < 4; i++ {
		ref, prk, err := imp()
		if err != nil {
			t.Fatal(err)
		}
		defer b.DeleteKey(bg, ref)
		checkHMAC(t, b, indexKey{ref, prk})
	}
	if n := b.finds.Load() - before; n != 1 {
		t.Fatalf("4 wrapped imports made %d token searches, want 1 (the wrapping key, once)", n)
	}
	if err := b.p.DestroyObject(s, wk[0]); err != nil {
		t.Fatal(err)
	}
	destroyed = true
	if _, _, err := imp(); !errors.Is(err, vault.ErrKeyNotFound) || !strings.Contains(err.Error(), "no AES wrapping key") {
		t.Fatalf("wrapped import after its wrapping key was destroyed: %v, want ErrKeyNotFound", err)
	}
}
