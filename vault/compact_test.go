package vault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	_ "github.com/pskvault/pskvault/backends/soft"
	_ "github.com/pskvault/pskvault/backends/tpm"
	"github.com/pskvault/pskvault/internal/swtpmsim"
	"github.com/pskvault/pskvault/vault"
)

// openAt initializes and opens a vault in a fresh state dir on backendURI.
// It returns the vault, the dir, and a close function that may be called
// before the test ends (the cleanup then does nothing).
func openAt(t *testing.T, backendURI string) (*vault.Vault, string, func() error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "v")
	if err := vault.Init(bg, dir, vault.Config{NodeID: "node-a", Backend: backendURI}); err != nil {
		t.Fatal(err)
	}
	return reopen(t, dir)
}

func reopen(t *testing.T, dir string) (*vault.Vault, string, func() error) {
	t.Helper()
	v, err := vault.Open(bg, dir)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	closeV := sync.OnceValue(v.Close)
	t.Cleanup(func() { closeV() })
	return v, dir, closeV
}

// secretForms are the ways a byte string can appear in vault.db: raw, hex,
// and base64 (encoding/json's form for []byte, which is how records store
// handles and sealed boxes).
func secretForms(b []byte) [][]byte {
	return [][]byte{b, []byte(hex.EncodeToString(b)), []byte(base64.StdEncoding.EncodeToString(b))}
}

// traceIn reports which file of dir, if any, contains secret in any form.
// It never prints the secret.
func traceIn(t *testing.T, dir string, secret []byte) string {
	t.Helper()
	var found string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != "" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, f := range secretForms(secret) {
			if bytes.Contains(data, f) {
				found = fmt.Sprintf("%s (%s)", filepath.Base(path), []string{"raw", "hex", "base64"}[i])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

type keeper struct {
	id    []byte
	ipskx []byte
}

// importKeepers imports n PSKs that must survive every compaction
// unchanged, half of them finalized, and records their imported keys.
func importKeepers(t *testing.T, v *vault.Vault, n int) []keeper {
	t.Helper()
	var ks []keeper
	for i := range n {
		r := pairReq(fmt.Sprintf("keep-%02d", i), randKey(t, 32))
		r.Finalize = i%2 == 1
		if _, err := v.Import(bg, r); err != nil {
			t.Fatalf("import keeper %d: %v", i, err)
		}
		d := derive(t, v, vault.DeriveRequest{Identity: r.Identity, Target: tls256})
		ks = append(ks, keeper{r.Identity, d.IPSKX})
	}
	return ks
}

func checkKeepers(t *testing.T, v *vault.Vault, ks []keeper) {
	t.Helper()
	for _, k := range ks {
		d, err := v.Derive(bg, vault.DeriveRequest{Identity: k.id, Target: tls256})
		if err != nil {
			t.Fatalf("%s no longer derives: %v", k.id, err)
		}
		if !bytes.Equal(d.IPSKX, k.ipskx) {
			t.Fatalf("%s derives a different imported key after compaction", k.id)
		}
	}
}

// destroyers are every way key material leaves the vault. Each returns the
// secrets (handle, sealed boxes) that must be gone from the state dir; ok
// checks the error of each destructive call.
var destroyers = []struct {
	name string
	run  func(t *testing.T, v *vault.Vault, id []byte, ok func(error)) [][]byte
}{
	{"delete", func(t *testing.T, v *vault.Vault, id []byte, ok func(error)) [][]byte {
		h := handleOf(t, v, id)
		ok(v.Delete(bg, id))
		return [][]byte{h}
	}},
	{"revoke", func(t *testing.T, v *vault.Vault, id []byte, ok func(error)) [][]byte {
		h := handleOf(t, v, id)
		_, err := v.Revoke(bg, id, "compromised")
		ok(err)
		return [][]byte{h}
	}},
	{"finalize", func(t *testing.T, v *vault.Vault, id []byte, ok func(error)) [][]byte {
		h := handleOf(t, v, id)
		_, err := v.Finalize(bg, id, vault.FinalizeRequest{})
		ok(err)
		return [][]byte{h}
	}},
	{"revoke-finalized", func(t *testing.T, v *vault.Vault, id []byte, ok func(error)) [][]byte {
		h := handleOf(t, v, id)
		_, err := v.Finalize(bg, id, vault.FinalizeRequest{})
		ok(err)
		p, err := v.Get(id)
		if err != nil || len(p.Finalized) == 0 {
			t.Fatalf("finalized PSK has no sealed imported keys: %v", err)
		}
		secrets := [][]byte{h}
		for _, s := range p.Finalized {
			secrets = append(secrets, s.Box)
		}
		_, err = v.Revoke(bg, id, "compromised")
		ok(err)
		return secrets
	}},
	{"sweep", func(t *testing.T, v *vault.Vault, id []byte, ok func(error)) [][]byte {
		h := handleOf(t, v, id)
		later := time.Now().Add(2 * time.Hour)
		vault.SetNow(v, func() time.Time { return later })
		defer vault.SetNow(v, time.Now)
		swept, err := v.Sweep(bg)
		ok(err)
		if len(swept) != 1 || !bytes.Equal(swept[0], id) {
			t.Fatalf("sweep: %d swept, want the one expired PSK", len(swept))
		}
		return [][]byte{h}
	}},
}

func handleOf(t *testing.T, v *vault.Vault, id []byte) []byte {
	t.Helper()
	p, err := v.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Handle) == 0 {
		t.Fatal("PSK has no handle")
	}
	return p.Handle
}

// slotContent reads key slot n of the vault in dir.
func slotContent(t *testing.T, dir string, n uint32) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "vault.keys"))
	if err != nil {
		t.Fatal(err)
	}
	off := int(n) * vault.SlotSize
	if off+vault.SlotSize > len(data) {
		t.Fatalf("vault.keys has no slot %d", n)
	}
	return data[off : off+vault.SlotSize]
}

// testDestructionLeavesNoTrace: after each way of destroying key material
// (crypto-shredding, keyslots.go), the destroyed key's handle (and a
// revoked finalized PSK's sealed boxes) occur nowhere in the state dir in
// any encoding, the data keys that sealed them occur nowhere either (their
// slots in vault.keys are zeros), while every other PSK derives exactly as
// before, also after a reopen. The negative control: before the
// destruction the same search finds each data key in vault.keys and the
// record's sealed secret in vault.db, so the search would see them.
func testDestructionLeavesNoTrace(t *testing.T, backendURI string) {
	for _, d := range destroyers {
		t.Run(d.name, func(t *testing.T) {
			v, dir, closeV := openAt(t, backendURI)
			keepers := importKeepers(t, v, 6)
			r := pairReq("doomed", randKey(t, 32))
			r.NotAfter = time.Now().Add(time.Hour)
			if _, err := v.Import(bg, r); err != nil {
				t.Fatal(err)
			}
			// Rewrite the record a few times so several stale copies exist.
			for range 3 {
				p, _ := v.Get(r.Identity)
				if err := vault.PutRecord(v, p); err != nil {
					t.Fatal(err)
				}
			}
			p, _ := v.Get(r.Identity)
			if len(p.Sealed) == 0 {
				t.Fatal("record has no sealed secret")
			}
			if where := traceIn(t, dir, p.Sealed); where != "vault.db (raw)" { // the binary record (codec.go) holds it as it is
				t.Fatalf("negative control: the record's sealed secret should be in vault.db, found in %q", where)
			}
			// Every slot the doomed record uses on its way is captured
			// (finalize moves it to a new one).
			deks := map[uint32][]byte{}
			capture := func() {
				slot := vault.KeySlotOf(v, r.Identity)
				if slot == 0 || deks[slot] != nil {
					return
				}
				dek := bytes.Clone(slotContent(t, dir, slot))
				if where := traceIn(t, dir, dek); where != "vault.keys (raw)" {
					t.Fatalf("negative control: the data key should be in vault.keys, found in %q", where)
				}
				deks[slot] = dek
			}
			capture()
			vault.SetSlotFault(v, func(string) error { capture(); return nil })
			ok := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("%s: %v", d.name, err)
				}
			}
			secrets := d.run(t, v, r.Identity, ok)
			vault.SetSlotFault(v, nil)
			// A finalized PSK lives on in a new slot, holding its imported
			// keys; every other slot it used is destroyed.
			delete(deks, vault.KeySlotOf(v, r.Identity))
			if len(deks) == 0 {
				t.Fatal("no data key captured")
			}
			checkKeepers(t, v, keepers)
			if err := closeV(); err != nil {
				t.Fatal(err)
			}
			for i, s := range secrets {
				if where := traceIn(t, dir, s); where != "" {
					t.Fatalf("secret %d of the destroyed PSK still in %s", i, where)
				}
			}
			for slot, dek := range deks {
				if where := traceIn(t, dir, dek); where != "" {
					t.Fatalf("the data key of slot %d (destroyed PSK) still in %s", slot, where)
				}
				if !bytes.Equal(slotContent(t, dir, slot), make([]byte, vault.SlotSize)) {
					// Reused by a later record: then it holds a new key.
					t.Logf("slot %d reused", slot)
				}
			}
			v2, _, _ := reopen(t, dir)
			checkKeepers(t, v2, keepers)
		})
	}
}

func TestDestructionLeavesNoTraceSoft(t *testing.T) { testDestructionLeavesNoTrace(t, "soft") }

func TestDestructionLeavesNoTraceTPM(t *testing.T) {
	sim := swtpmsim.Start(t)
	testDestructionLeavesNoTrace(t, sim.URI())
}

// TestCompactCrashSafe: an explicit compaction (no longer needed for
// security, see keyslots.go, but kept to reclaim space and to purge the
// clear handles of a converted old vault.db) that fails before the rename
// leaves the old vault.db in place and working; the old file opens on its
// own; a leftover vault.db.tmp is removed by the next compaction.
func TestCompactCrashSafe(t *testing.T) {
	v, dir, closeV := openAt(t, "soft")
	keepers := importKeepers(t, v, 4)
	if _, err := v.Import(bg, pairReq("doomed", randKey(t, 32))); err != nil {
		t.Fatal(err)
	}
	if err := v.Delete(bg, []byte("doomed")); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("simulated crash before rename")
	vault.SetCompactFault(v, func(step string) error {
		if step == "rename" {
			return crash
		}
		return nil
	})
	if err := v.Compact(); !errors.Is(err, vault.ErrCompact) || !errors.Is(err, crash) {
		t.Fatalf("failing compaction: got %v, want ErrCompact", err)
	}
	if v.CompactionPending() == nil {
		t.Fatal("failed compaction not reported as pending")
	}
	checkKeepers(t, v, keepers)
	// The vault still takes changes on the old file.
	if _, err := v.Import(bg, pairReq("after", randKey(t, 32))); err != nil {
		t.Fatal(err)
	}
	if err := closeV(); err != nil {
		t.Fatal(err)
	}
	// The old file is a complete database on its own.
	db, err := bolt.Open(filepath.Join(dir, "vault.db"), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("old vault.db does not open: %v", err)
	}
	n := 0
	db.View(func(tx *bolt.Tx) error { n = tx.Bucket([]byte("psks")).Stats().KeyN; return nil })
	db.Close()
	if n != len(keepers)+1 {
		t.Fatalf("old vault.db has %d records, want %d", n, len(keepers)+1)
	}
	// A crash can also leave a half-written vault.db.tmp behind.
	tmp := filepath.Join(dir, "vault.db.tmp")
	if err := os.WriteFile(tmp, []byte("half a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	v2, _, _ := reopen(t, dir)
	checkKeepers(t, v2, keepers)
	if _, err := v2.Get([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if err := v2.Compact(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale vault.db.tmp not removed: %v", err)
	}
	checkKeepers(t, v2, keepers)
}

// TestCompactModeAndConcurrency: the rewritten vault.db is 0600, and
// derivations run (race-free) while other PSKs are destroyed.
func TestCompactModeAndConcurrency(t *testing.T) {
	v, dir, _ := openAt(t, "soft")
	keepers := importKeepers(t, v, 4)
	var ids [][]byte
	for i := range 12 {
		r := pairReq(fmt.Sprintf("doomed-%02d", i), randKey(t, 32))
		if _, err := v.Import(bg, r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.Identity)
	}
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, k := range keepers {
		wg.Go(func() {
			for ctx.Err() == nil {
				d, err := v.Derive(bg, vault.DeriveRequest{Identity: k.id, Target: tls256})
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(d.IPSKX, k.ipskx) {
					errs <- fmt.Errorf("%s: imported key changed", k.id)
					return
				}
			}
		})
	}
	for i, id := range ids {
		var err error
		switch i % 3 {
		case 0:
			err = v.Delete(bg, id)
		case 1:
			_, err = v.Revoke(bg, id, "test")
		case 2:
			_, err = v.Finalize(bg, id, vault.FinalizeRequest{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("derivation during compaction: %v", err)
	}
	st, err := os.Stat(filepath.Join(dir, "vault.db"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("vault.db has mode %04o after compaction, want 0600", st.Mode().Perm())
	}
	if err := v.Compact(); err != nil {
		t.Fatal(err)
	}
}

// TestZeroOverwriteLeavesOldBytes documents why the vault compacts instead
// of overwriting a record with zeros before deleting it: bbolt is
// copy-on-write, so the zeros go to a new page and the page holding the old
// value is freed as is. In one transaction the old page is never touched
// again by that transaction; in two, the second may happen to reuse it,
// but not while any read transaction is open (or if another allocation
// takes it), so nothing is guaranteed. If this ever fails, bbolt changed;
// revisit the reasoning at the top of vault/compact.go.
func TestZeroOverwriteLeavesOldBytes(t *testing.T) {
	for _, twoTx := range []bool{false, true} {
		t.Run(fmt.Sprintf("two-transactions=%v", twoTx), func(t *testing.T) {
			dir := t.TempDir()
			// Mapped large enough up front: an open reader blocks a remap.
			db, err := bolt.Open(filepath.Join(dir, "z.db"), 0o600, &bolt.Options{InitialMmapSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			secret := make([]byte, 48)
			rand.Read(secret)
			bk, k := []byte("b"), []byte("k")
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucket(bk)
				if err != nil {
					return err
				}
				for i := range 20 { // neighbours, so the leaf is not trivial
					b.Put([]byte{byte(i)}, bytes.Repeat([]byte{byte(i)}, 40))
				}
				return b.Put(k, secret)
			}))
			zero := func(tx *bolt.Tx) error { return tx.Bucket(bk).Put(k, make([]byte, len(secret))) }
			del := func(tx *bolt.Tx) error { return tx.Bucket(bk).Delete(k) }
			if twoTx {
				// A reader (in the vault: a concurrent lookup of the
				// auxiliary key, a backup) pins the freed pages.
				rtx, err := db.Begin(false)
				must(err)
				must(db.Update(zero))
				must(db.Update(del))
				must(rtx.Rollback())
			} else {
				must(db.Update(func(tx *bolt.Tx) error { return errors.Join(zero(tx), del(tx)) }))
			}
			must(db.Close())
			if traceIn(t, dir, secret) == "" {
				t.Fatal("bbolt no longer leaves the overwritten value in a freed page; the zero overwrite may now suffice")
			}
		})
	}
}

// BenchmarkCompact measures the rewrite a destructive change now costs, on
// a vault of 1000 PSKs (soft backend, half of them finalized), and the
// whole of a delete including it.
func BenchmarkCompact(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "v")
	if err := vault.Init(bg, dir, vault.Config{NodeID: "node-a", Backend: "soft"}); err != nil {
		b.Fatal(err)
	}
	v, err := vault.Open(bg, dir)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		k := make([]byte, 32)
		rand.Read(k)
		r := pairReq(fmt.Sprintf("psk-%04d", i), k)
		r.Finalize = i%2 == 1
		if _, err := v.Import(bg, r); err != nil {
			b.Fatal(err)
		}
	}
	if err := v.Compact(); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, "vault.db"))
	b.Run("compact-1000", func(b *testing.B) {
		for b.Loop() {
			if err := v.Compact(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(st.Size()), "file-bytes")
	})
	b.Run("delete-with-compact-1000", func(b *testing.B) {
		i := 0
		for b.Loop() {
			b.StopTimer()
			k := make([]byte, 32)
			rand.Read(k)
			id := []byte(fmt.Sprintf("extra-%06d", i))
			i++
			if _, err := v.Import(bg, pairReq(string(id), k)); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := v.Delete(bg, id); err != nil {
				b.Fatal(err)
			}
		}
	})
	v.Close()
	// Open reads the index, compacts, and opens the backend.
	b.Run("open-1000", func(b *testing.B) {
		for b.Loop() {
			w, err := vault.Open(bg, dir)
			if err != nil {
				b.Fatal(err)
			}
			w.Close()
		}
	})
}

// TestFinalizeAtImportAllOrNothing: when finalizing at creation fails, the
// PSK is not kept (a generated key the peer never receives would otherwise
// sit in the vault), and a retry works.
func TestFinalizeAtImportAllOrNothing(t *testing.T) {
	v, _, _ := openAt(t, "soft")
	fail := errors.New("simulated disk failure")
	// The import's own record gets its slot; finalize's move to a new
	// slot (once the main key is destroyed) fails.
	takes := 0
	vault.SetSlotFault(v, func(step string) error {
		if step == "take" {
			if takes++; takes > 1 {
				return fail
			}
		}
		return nil
	})
	req := pairReq("fin", randKey(t, 32))
	req.Finalize = true
	if _, _, err := v.Create(bg, req); !errors.Is(err, fail) {
		t.Fatalf("create --finalize with a failing key-slot write: %v", err)
	}
	if _, err := v.Get([]byte("fin")); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("the unfinished PSK was kept: %v", err)
	}
	vault.SetSlotFault(v, nil)
	p, key, err := v.Create(bg, req)
	if err != nil || !p.IsFinalized() {
		t.Fatalf("retry: %v", err)
	}
	clear(key)
}
