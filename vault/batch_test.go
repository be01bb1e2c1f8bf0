package vault_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/pskvault/pskvault/vault"
)

// distinctKey is a different good key for every i.
func distinctKey(i int) []byte {
	sum := sha256.Sum256(fmt.Appendf(nil, "pskvault batch test key %d", i))
	return sum[:]
}

func entry(i int) *vault.ImportRequest {
	r := pairwise(fmt.Sprintf("batch-device-%05d", i))
	r.Key = distinctKey(i)
	return &r
}

// feed yields reqs one at a time, then io.EOF.
func feed(reqs ...*vault.ImportRequest) func() (*vault.ImportRequest, error) {
	i := 0
	return func() (*vault.ImportRequest, error) {
		if i == len(reqs) {
			return nil, io.EOF
		}
		i++
		// The vault wipes each key once used: hand it a copy.
		r := *reqs[i-1]
		r.Key = bytes.Clone(r.Key)
		return &r, nil
	}
}

func TestImportBatch(t *testing.T) {
	v := openVault(t, "node-a")
	ctx := context.Background()
	var reqs []*vault.ImportRequest
	for i := range 50 {
		reqs = append(reqs, entry(i))
	}
	ps, err := v.ImportBatch(ctx, 0, feed(reqs...))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 50 || v.Count() != 50 {
		t.Fatalf("imported %d, vault holds %d; want 50", len(ps), v.Count())
	}
	for i, p := range ps {
		if !bytes.Equal(p.Identity, reqs[i].Identity) || p.KCV == "" || len(p.Fingerprint) == 0 {
			t.Fatalf("record %d: identity %q, KCV %q, fingerprint %d bytes", i, p.Identity, p.KCV, len(p.Fingerprint))
		}
	}
	// The keys work: the batch's PSK derives what a single import of the
	// same key derives.
	w := openVault(t, "node-a")
	if _, err := w.Import(ctx, *entry(7)); err != nil {
		t.Fatal(err)
	}
	dr := vault.DeriveRequest{Identity: reqs[7].Identity, Target: vault.AllTargets[0]}
	a, err := v.Derive(ctx, dr)
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Derive(ctx, dr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.IPSKX, b.IPSKX) {
		t.Fatal("batch-imported PSK derives a different ipskx than a single import of the same key: mismatch")
	}
	// And the batch's records count for later imports: same identity,
	// same key refused.
	if _, err := v.Import(ctx, *entry(3)); !errors.Is(err, vault.ErrExists) {
		t.Fatalf("re-import of a batch entry: %v, want ErrExists", err)
	}
	r := entry(3)
	r.Identity = []byte("other-identity")
	if _, err := v.Import(ctx, *r); !errors.Is(err, vault.ErrKeyReused) {
		t.Fatalf("import of a batch entry's key: %v, want ErrKeyReused", err)
	}
}

// TestImportBatchAllOrNothing: one bad entry and nothing of the batch is
// kept, the backend keys already made are destroyed and their intents
// dropped, and the answer names the entry.
func TestImportBatchAllOrNothing(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "v")
	if err := vault.Init(ctx, dir, vault.Config{NodeID: "node-a", Backend: "invtest"}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { v.Close() }()
	if _, err := v.Import(ctx, *entry(1000)); err != nil {
		t.Fatal(err)
	}
	store := invStores[dir]
	before := store.count()

	bad := func(i int, f func(*vault.ImportRequest)) []*vault.ImportRequest {
		var reqs []*vault.ImportRequest
		for j := range 20 {
			r := entry(j)
			if j == i {
				f(r)
			}
			reqs = append(reqs, r)
		}
		return reqs
	}
	cases := []struct {
		name  string
		reqs  []*vault.ImportRequest
		index int
		want  error
	}{
		{"key too short", bad(12, func(r *vault.ImportRequest) { r.Key = r.Key[:15] }), 12, vault.ErrKeyTooShort},
		{"low entropy", bad(5, func(r *vault.ImportRequest) { r.Key = bytes.Repeat([]byte{1, 2}, 16) }), 5, vault.ErrLowEntropy},
		{"identity already in the vault", bad(19, func(r *vault.ImportRequest) { r.Identity = entry(1000).Identity }), 19, vault.ErrExists},
		{"key already in the vault", bad(0, func(r *vault.ImportRequest) { r.Key = distinctKey(1000) }), 0, vault.ErrKeyReused},
		{"identity twice in the batch", bad(9, func(r *vault.ImportRequest) { r.Identity = entry(4).Identity }), 9, vault.ErrExists},
		{"one key twice in the batch", bad(9, func(r *vault.ImportRequest) { r.Key = distinctKey(4) }), 9, vault.ErrKeyReused},
		{"confusable with an earlier entry", bad(9, func(r *vault.ImportRequest) { r.Identity = []byte("batch-devіce-00004") }), 9, vault.ErrIdentity}, // Cyrillic і
		{"finalize refused in a batch", bad(2, func(r *vault.ImportRequest) { r.Finalize = true }), 2, vault.ErrInvalid},
		{"not party", bad(17, func(r *vault.ImportRequest) { r.ClientNode, r.ServerNode = "x", "y" }), 17, vault.ErrNotParty},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps, err := v.ImportBatch(ctx, 0, feed(c.reqs...))
			var be *vault.BatchError
			if !errors.As(err, &be) || !errors.Is(err, vault.ErrBatch) || !errors.Is(err, c.want) {
				t.Fatalf("got %v, want a BatchError wrapping %v", err, c.want)
			}
			if be.Entries[0].Index != c.index || be.Read != len(c.reqs) {
				t.Fatalf("entry %d reported after %d read, want entry %d after %d", be.Entries[0].Index, be.Read, c.index, len(c.reqs))
			}
			if ps != nil || v.Count() != 1 {
				t.Fatalf("refused batch left %d records (want 1)", v.Count())
			}
			if n := store.count(); n != before {
				t.Fatalf("refused batch left %d backend keys, want %d", n, before)
			}
		})
	}
	// No intent is left for the next start to clean up.
	v.Close()
	if v, err = vault.Open(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if rec := v.Reconciliation(); rec.CreatesUndone != 0 || len(rec.Orphans) != 0 {
		t.Fatalf("after refused batches: %d creates undone, %d orphans at start; want none", rec.CreatesUndone, len(rec.Orphans))
	}
}

// TestImportBatchReportsEveryProblem: after the first bad entry the rest
// are still checked (without making keys), and each problem is reported
// with its index; a body that breaks off ends the batch.
func TestImportBatchReportsEveryProblem(t *testing.T) {
	v := openVault(t, "node-a")
	ctx := context.Background()
	var reqs []*vault.ImportRequest
	for i := range 30 {
		r := entry(i)
		if i%10 == 3 {
			r.Key = r.Key[:8]
		}
		reqs = append(reqs, r)
	}
	_, err := v.ImportBatch(ctx, 0, feed(reqs...))
	var be *vault.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want a BatchError", err)
	}
	var idx []int
	for _, e := range be.Entries {
		if !errors.Is(e, vault.ErrKeyTooShort) {
			t.Fatalf("entry %d: %v", e.Index, e.Err)
		}
		idx = append(idx, e.Index)
	}
	if !slices.Equal(idx, []int{3, 13, 23}) {
		t.Fatalf("problems reported at %v, want [3 13 23]", idx)
	}
	// A stream that fails to read (a client gone mid-body).
	cut := errors.New("unexpected EOF")
	n := 0
	_, err = v.ImportBatch(ctx, 0, func() (*vault.ImportRequest, error) {
		if n == 5 {
			return nil, cut
		}
		n++
		return entry(100 + n), nil
	})
	if !errors.As(err, &be) || !errors.Is(err, cut) || be.Entries[0].Index != 5 {
		t.Fatalf("cut-off stream: %v", err)
	}
	if v.Count() != 0 {
		t.Fatalf("refused batches left %d records", v.Count())
	}
	// An empty batch imports nothing, successfully.
	if ps, err := v.ImportBatch(ctx, 0, feed()); err != nil || len(ps) != 0 {
		t.Fatalf("empty batch: %d records, %v", len(ps), err)
	}
}

// TestImportBatchRace: a single import of an identity a running batch also
// holds wins or loses cleanly; either way no identity is held twice and
// the batch is all or nothing.
func TestImportBatchRace(t *testing.T) {
	v := openVault(t, "node-a")
	ctx := context.Background()
	var reqs []*vault.ImportRequest
	for i := range 200 {
		reqs = append(reqs, entry(i))
	}
	var wg sync.WaitGroup
	var single error
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := entry(150)
		r.Key = distinctKey(9999)
		_, single = v.Import(ctx, *r)
	}()
	ps, err := v.ImportBatch(ctx, 0, feed(reqs...))
	wg.Wait()
	switch {
	case err == nil && single == nil:
		t.Fatal("both the batch and the single import of the same identity succeeded")
	case err == nil:
		if len(ps) != 200 || v.Count() != 200 || !errors.Is(single, vault.ErrExists) {
			t.Fatalf("batch won: %d records, vault %d, single: %v", len(ps), v.Count(), single)
		}
	default:
		if !errors.Is(err, vault.ErrExists) || v.Count() != 1 {
			t.Fatalf("single won: batch %v, vault %d", err, v.Count())
		}
	}
}

func TestListPage(t *testing.T) {
	v := openVault(t, "node-a")
	ctx := context.Background()
	var reqs []*vault.ImportRequest
	for i := range 95 {
		reqs = append(reqs, entry(i))
	}
	if _, err := v.ImportBatch(ctx, 0, feed(reqs...)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.ListPage(nil, 0); !errors.Is(err, vault.ErrInvalid) {
		t.Fatalf("limit 0: %v", err)
	}
	var got [][]byte
	var after []byte
	pages := 0
	for {
		ps, next, err := v.ListPage(after, 10)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, p := range ps {
			got = append(got, p.Identity)
		}
		if next == nil {
			break
		}
		after = next
	}
	if pages != 10 || len(got) != 95 {
		t.Fatalf("%d pages, %d records; want 10, 95", pages, len(got))
	}
	all := listAll(t, v)
	for i, p := range all {
		if !bytes.Equal(p.Identity, got[i]) {
			t.Fatalf("paged order differs from List at %d", i)
		}
	}
	// An exact multiple of the limit ends with next nil on the last page.
	if _, next, _ := v.ListPage(all[84].Identity, 10); next != nil {
		t.Fatalf("last full page has a next cursor %q", next)
	}
	// After an identity that is not in the vault: the first one after it.
	ps, _, _ := v.ListPage([]byte("batch-device-00041x"), 1)
	if len(ps) != 1 || string(ps[0].Identity) != "batch-device-00042" {
		t.Fatalf("page after a missing identity starts at %q", ps[0].Identity)
	}
}

// TestListPageConcurrentDeletes: records that exist throughout a paged walk
// are listed exactly once, while others are deleted and imported meanwhile.
func TestListPageConcurrentDeletes(t *testing.T) {
	v := openVault(t, "node-a")
	ctx := context.Background()
	var reqs []*vault.ImportRequest
	for i := range 300 {
		reqs = append(reqs, entry(i))
	}
	if _, err := v.ImportBatch(ctx, 0, feed(reqs...)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		// Delete every odd record, and import new ones in between.
		for i := 1; i < 300; i += 2 {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := v.Delete(ctx, entry(i).Identity); err != nil {
				done <- err
				return
			}
			r := entry(1000 + i)
			if _, err := v.Import(ctx, *r); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	seen := map[string]int{}
	var after []byte
	for {
		ps, next, err := v.ListPage(after, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			seen[string(p.Identity)]++
		}
		if next == nil {
			break
		}
		after = next
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i += 2 { // never deleted
		if n := seen[string(entry(i).Identity)]; n != 1 {
			t.Fatalf("record %d, present throughout, listed %d times", i, n)
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%q listed %d times", id, n)
		}
	}
}

// TestCheckPage: the pages' reports add up to Check's, finding for finding.
func TestCheckPage(t *testing.T) {
	v := openVault(t, "node-a")
	ctx := context.Background()
	var reqs []*vault.ImportRequest
	for i := range 40 {
		r := entry(i)
		if i%7 == 0 {
			r.AllowPSKKE = true
		}
		reqs = append(reqs, r)
	}
	if _, err := v.ImportBatch(ctx, 0, feed(reqs...)); err != nil {
		t.Fatal(err)
	}
	// A key-reuse MUST violation between two records far apart, written
	// behind the vault's back.
	p, _ := v.Get(reqs[2].Identity)
	q, _ := v.Get(reqs[38].Identity)
	q.Fingerprint = p.Fingerprint
	if err := vault.PutRecord(v, q); err != nil {
		t.Fatal(err)
	}
	full := checkAll(t, v)
	var audits []vault.Audit
	var must, should, warn int
	var after []byte
	for {
		r, next, err := v.CheckPage(after, 6)
		if err != nil {
			t.Fatal(err)
		}
		audits = append(audits, r.PSKs...)
		must, should, warn = must+r.Must, should+r.Should, warn+r.Warn
		if next == nil {
			break
		}
		after = next
	}
	if must != full.Must || should != full.Should || warn != full.Warn || must != 2 {
		t.Fatalf("pages: %d/%d/%d MUST/SHOULD/warn, Check: %d/%d/%d (want 2 MUST)", must, should, warn, full.Must, full.Should, full.Warn)
	}
	if len(audits) != len(full.PSKs) {
		t.Fatalf("%d audits paged, %d in Check", len(audits), len(full.PSKs))
	}
	for i := range audits {
		if fmt.Sprint(audits[i]) != fmt.Sprint(full.PSKs[i]) {
			t.Fatalf("audit %d differs:\npaged %v\nfull  %v", i, audits[i], full.PSKs[i])
		}
	}
}
