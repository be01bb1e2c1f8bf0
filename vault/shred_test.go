package vault_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pskvault/pskvault/vault"
)

// TestShredCrashStates: the states a crash can leave between vault.keys
// and vault.db (keyslots.go). A record whose slot was zeroed before its
// change was committed is treated as destroyed: derivation refused
// (ErrKeyNotFound, 410), reported at open and by check, and the record can
// still be deleted. A slot written for a record that was never committed
// (an orphan) is zeroed at open.
func TestShredCrashStates(t *testing.T) {
	v, dir, closeV := openAt(t, "soft")
	keepers := importKeepers(t, v, 3)
	if _, err := v.Import(bg, pairReq("zeroed", randKey(t, 32))); err != nil {
		t.Fatal(err)
	}
	slot := vault.KeySlotOf(v, []byte("zeroed"))
	if slot == 0 {
		t.Fatal("record has no key slot")
	}
	if err := closeV(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "vault.keys")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The crash after the slot was zeroed, before the commit.
	if _, err := f.WriteAt(make([]byte, vault.SlotSize), int64(slot)*vault.SlotSize); err != nil {
		t.Fatal(err)
	}
	// The crash after a new record's DEK was written, before its commit.
	st, _ := f.Stat()
	orphanAt := st.Size()
	orphan := make([]byte, vault.SlotSize)
	rand.Read(orphan)
	if _, err := f.WriteAt(orphan, orphanAt); err != nil {
		t.Fatal(err)
	}
	f.Close()
	markCrashed(t, dir)

	v2, _, _ := reopen(t, dir)
	checkKeepers(t, v2, keepers)
	if _, err := v2.Derive(bg, vault.DeriveRequest{Identity: []byte("zeroed"), Target: tls256}); !errors.Is(err, vault.ErrKeyNotFound) {
		t.Fatalf("derive of a record whose key slot is zeroed: %v, want ErrKeyNotFound", err)
	}
	if probs := strings.Join(v2.Reconciliation().Problems, "\n"); !strings.Contains(probs, "treated as destroyed") {
		t.Fatalf("open did not report the destroyed record: %q", probs)
	}
	found := false
	for _, a := range checkAll(t, v2).PSKs {
		for _, f := range a.Findings {
			found = found || (a.IdentityHex == "7a65726f6564" && f.Rule == "key-missing")
		}
	}
	if !found {
		t.Fatal("check does not report the destroyed record as key-missing")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, orphan) {
		t.Fatal("the orphan slot was not zeroed at open")
	}
	if err := v2.Delete(bg, []byte("zeroed")); err != nil {
		t.Fatalf("delete of a destroyed record: %v", err)
	}
	// Slots are reused: the next imports fill the freed ones.
	for _, id := range []string{"new-1", "new-2"} {
		if _, err := v2.Import(bg, pairReq(id, randKey(t, 32))); err != nil {
			t.Fatal(err)
		}
		derive(t, v2, vault.DeriveRequest{Identity: []byte(id), Target: tls256})
		if s := vault.KeySlotOf(v2, []byte(id)); int64(s) > orphanAt/vault.SlotSize {
			t.Fatalf("%s took slot %d, past the end of vault.keys (%d slots), although freed slots were there", id, s, orphanAt/vault.SlotSize+1)
		}
	}
}

// TestOldFormatConverted: a vault.db written before vault.keys existed
// (handles and finalized boxes in clear in the records) opens, its records
// are moved into sealed secrets, the file is rewritten so that no freed
// page keeps them in clear, and every PSK derives as before.
func TestOldFormatConverted(t *testing.T) {
	v, dir, closeV := openAt(t, "soft")
	keepers := importKeepers(t, v, 4) // half finalized
	var secrets [][]byte
	old := map[string]*vault.PSK{}
	for _, k := range keepers {
		p, err := v.Get(k.id)
		if err != nil {
			t.Fatal(err)
		}
		old[string(k.id)] = p
		if len(p.Handle) > 0 {
			secrets = append(secrets, p.Handle)
		}
		for _, s := range p.Finalized {
			secrets = append(secrets, s.Box)
		}
	}
	if err := closeV(); err != nil {
		t.Fatal(err)
	}
	// Rewrite the records the old way, and remove vault.keys.
	db, err := bolt.Open(filepath.Join(dir, "vault.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// A vault made before vault.keys was made before the record
		// indexes too.
		if err := tx.Bucket([]byte("meta")).Delete([]byte("indexes")); err != nil {
			return err
		}
		b := tx.Bucket([]byte("psks"))
		for id, p := range old {
			p.KeySlot, p.Sealed = 0, nil
			raw, err := json.Marshal(p)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(id), raw); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "vault.keys")); err != nil {
		t.Fatal(err)
	}
	if where := traceIn(t, dir, secrets[0]); where != "vault.db (base64)" {
		t.Fatalf("negative control: the old record's handle should be in vault.db in clear, found in %q", where)
	}

	v2, _, close2 := reopen(t, dir)
	checkKeepers(t, v2, keepers)
	if err := v2.CompactionPending(); err != nil {
		t.Fatal(err)
	}
	for _, k := range keepers {
		if vault.KeySlotOf(v2, k.id) == 0 {
			t.Fatalf("%s not converted", k.id)
		}
	}
	if err := close2(); err != nil {
		t.Fatal(err)
	}
	for i, s := range secrets {
		if where := traceIn(t, dir, s); where != "" {
			t.Fatalf("secret %d of a converted record still in clear in %s", i, where)
		}
	}
	v3, _, _ := reopen(t, dir)
	checkKeepers(t, v3, keepers)
}

// TestBatchRecordsSealed: records written by a batch import keep their
// handles only sealed under data keys of their own, like single imports:
// no handle is in clear in the state dir, each record has a key slot, and
// deleting one destroys its data key.
func TestBatchRecordsSealed(t *testing.T) {
	v, dir, closeV := openAt(t, "soft")
	var reqs []*vault.ImportRequest
	for _, id := range []string{"batch-1", "batch-2", "batch-3"} {
		r := pairReq(id, randKey(t, 32))
		reqs = append(reqs, &r)
	}
	ps, err := v.ImportBatch(bg, 0, feed(reqs...))
	if err != nil {
		t.Fatal(err)
	}
	var handles [][]byte
	for _, p := range ps {
		q, err := v.Get(p.Identity)
		if err != nil || len(q.Handle) == 0 {
			t.Fatalf("%s: %v", p.Identity, err)
		}
		handles = append(handles, q.Handle)
		if vault.KeySlotOf(v, p.Identity) == 0 {
			t.Fatalf("%s has no key slot", p.Identity)
		}
	}
	slot := vault.KeySlotOf(v, []byte("batch-2"))
	dek := bytes.Clone(slotContent(t, dir, slot))
	if err := v.Delete(bg, []byte("batch-2")); err != nil {
		t.Fatal(err)
	}
	if err := closeV(); err != nil {
		t.Fatal(err)
	}
	for i, h := range handles {
		if where := traceIn(t, dir, h); where != "" {
			t.Fatalf("handle %d of a batch-imported PSK in clear in %s", i, where)
		}
	}
	if where := traceIn(t, dir, dek); where != "" {
		t.Fatalf("the deleted batch record's data key is still in %s", where)
	}
	v2, _, _ := reopen(t, dir)
	for _, id := range []string{"batch-1", "batch-3"} {
		derive(t, v2, vault.DeriveRequest{Identity: []byte(id), Target: tls256})
	}
}

// markCrashed makes the closed vault in dir look as a process that died
// with it open leaves it: still marked open (the mark Close removes).
func markCrashed(t *testing.T, dir string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "vault.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("running"), []byte{1}) }); err != nil {
		t.Fatal(err)
	}
}

// TestSlotsReusedAfterReopen: the key slots freed before a clean close are
// found free at the next Open (a zero slot is free) and taken before the
// file grows.
func TestSlotsReusedAfterReopen(t *testing.T) {
	v, dir, closeV := openAt(t, "soft")
	var top uint32
	for i := range 6 {
		id := fmt.Sprintf("first-%d", i)
		if _, err := v.Import(bg, pairReq(id, randKey(t, 32))); err != nil {
			t.Fatal(err)
		}
		top = max(top, vault.KeySlotOf(v, []byte(id)))
	}
	for i := range 3 {
		if err := v.Delete(bg, fmt.Appendf(nil, "first-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := closeV(); err != nil {
		t.Fatal(err)
	}
	v2, _, _ := reopen(t, dir)
	for i := range 3 {
		id := fmt.Sprintf("again-%d", i)
		if _, err := v2.Import(bg, pairReq(id, randKey(t, 32))); err != nil {
			t.Fatal(err)
		}
		if s := vault.KeySlotOf(v2, []byte(id)); s > top {
			t.Fatalf("%s took slot %d although slots up to %d were freed before the reopen", id, s, top)
		}
	}
}

// TestFreelistWrittenAtClose: while the vault is open its commits skip
// bbolt's free-page list (store.go start); Close writes it, so that the
// next Open reads it instead of rebuilding it from every page header.
func TestFreelistWrittenAtClose(t *testing.T) {
	v, dir, closeV := openAt(t, "soft")
	if !vault.FreelistSyncSkipped(v) {
		t.Fatal("the open vault's commits write the free-page list")
	}
	for i := range 20 {
		if _, err := v.Import(bg, pairReq(fmt.Sprintf("f-%d", i), randKey(t, 32))); err != nil {
			t.Fatal(err)
		}
	}
	if err := closeV(); err != nil {
		t.Fatal(err)
	}
	if !freelistSynced(t, filepath.Join(dir, "vault.db")) {
		t.Fatal("Close did not write the free-page list")
	}
	v2, _, _ := reopen(t, dir)
	derive(t, v2, vault.DeriveRequest{Identity: []byte("f-7"), Target: tls256})
}

// freelistSynced reads the meta pages of the bbolt file at path: the one
// with the higher transaction id names the free-page list, or
// 0xffffffffffffffff when it was not written (bbolt's layout: the meta
// at offset 16 of pages 0 and 1; magic, version, page size, flags, root
// bucket (16 bytes), freelist page id, high water mark, txid).
func freelistSynced(t *testing.T, path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	meta := func(off int) (freelist, txid uint64) {
		m := b[off+16:]
		return binary.LittleEndian.Uint64(m[32:]), binary.LittleEndian.Uint64(m[48:])
	}
	size := int(binary.LittleEndian.Uint32(b[16+8:]))
	f0, t0 := meta(0)
	f1, t1 := meta(size)
	if t1 > t0 {
		f0 = f1
	}
	return f0 != ^uint64(0)
}

// TestPreviousReleaseVault: a vault.db as the release before the record
// indexes wrote it (records in JSON, secrets already sealed under
// vault.keys, no index buckets, no counts, no index version) opens with
// its indexes built once: every PSK derives as before, the counts, the
// next expiry and the key-reuse and confusable rules see every record,
// and the next start builds nothing.
func TestPreviousReleaseVault(t *testing.T) {
	v, dir, closeV := openAt(t, "soft")
	keepers := importKeepers(t, v, 4)
	exp := pairReq("expiring", randKey(t, 32))
	exp.NotAfter = time.Now().Add(time.Hour).Truncate(time.Second)
	reused := randKey(t, 32)
	for _, r := range []vault.ImportRequest{exp, pairReq("paypal", reused)} {
		if _, err := v.Import(bg, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := closeV(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "vault.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{"by-key", "by-skeleton", "by-expiry", "unfinished"} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
		}
		m := tx.Bucket([]byte("meta"))
		if err := errors.Join(m.Delete([]byte("indexes")), m.Delete([]byte("counts"))); err != nil {
			return err
		}
		b := tx.Bucket([]byte("psks"))
		var ps []*vault.PSK
		if err := b.ForEach(func(_, raw []byte) error {
			p, err := vault.DecodeRecord(raw)
			ps = append(ps, p)
			return err
		}); err != nil {
			return err
		}
		for _, p := range ps {
			raw, err := json.Marshal(p)
			if err != nil {
				return err
			}
			if err := b.Put(p.Identity, raw); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	v2, _, close2 := reopen(t, dir)
	checkKeepers(t, v2, keepers)
	st := v2.Stats()
	if st.Active != 6 || !st.NextExpiry.Equal(exp.NotAfter) || v2.Count() != 6 {
		t.Fatalf("after the index build: %+v, count %d", st, v2.Count())
	}
	if _, err := v2.Import(bg, pairReq("other", reused)); !errors.Is(err, vault.ErrKeyReused) {
		t.Fatalf("import of a stored key after the index build: %v, want ErrKeyReused", err)
	}
	if _, err := v2.Import(bg, pairReq("paypa1", randKey(t, 32))); !errors.Is(err, vault.ErrIdentity) {
		t.Fatalf("import of a confusable identity after the index build: %v, want ErrIdentity", err)
	}
	if rep := checkAll(t, v2); rep.Must != 0 {
		t.Fatalf("check after the index build: %d MUST violations", rep.Must)
	}
	if err := close2(); err != nil {
		t.Fatal(err)
	}
	v3, _, _ := reopen(t, dir)
	checkKeepers(t, v3, keepers)
}
