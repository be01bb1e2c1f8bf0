package vault_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// TestDeriveDoesNotWaitForWrites: while a compaction holds the database
// (held here by the compaction fault hook) and another change is waiting
// for it, a derivation is still answered from the in-memory index (issue
// 12: an import or delete used to hold the index lock while it waited for
// the database, so every derive stalled behind the compaction).
func TestDeriveDoesNotWaitForWrites(t *testing.T) {
	v := openVault(t, "node-a")
	ctx := context.Background()
	for i, id := range []string{"serve", "first", "second"} {
		req := pairwise(id)
		req.Key = key(32 + i)
		if _, err := v.Import(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	vault.SetCompactFault(v, func(string) error {
		once.Do(func() { close(held) })
		<-release
		return nil
	})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer func() { unblock(); wg.Wait() }()

	// The first delete's compaction now holds the database.
	wg.Add(1)
	go func() { defer wg.Done(); errs <- v.Delete(ctx, []byte("first")) }()
	<-held

	// The second delete reaches its first database write and waits there
	// for the compaction (nothing else writes meanwhile).
	waiting := make(chan struct{})
	var waitOnce sync.Once
	vault.SetBeforeWrite(v, func() { waitOnce.Do(func() { close(waiting) }) })
	wg.Add(1)
	go func() { defer wg.Done(); errs <- v.Delete(ctx, []byte("second")) }()
	<-waiting

	derived := make(chan error, 1)
	go func() {
		d, err := v.Derive(ctx, vault.DeriveRequest{Identity: []byte("serve"), Context: []byte("node-a|node-b"), Target: vault.Target{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}})
		if err == nil {
			clear(d.IPSKX)
		}
		derived <- err
	}()
	select {
	case err := <-derived:
		if err != nil {
			t.Fatalf("derive during a compaction: %v", err)
		}
	case <-time.After(10 * time.Second):
		unblock()
		t.Fatal("derive waited for a compaction and the write queued behind it (still blocked after 10 s)")
	}
	unblock()
	wg.Wait()
	vault.SetBeforeWrite(v, nil)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("delete: %v", err)
		}
	}
	for _, id := range []string{"first", "second"} {
		if _, err := v.Get([]byte(id)); !errors.Is(err, vault.ErrNotFound) {
			t.Fatalf("%s still there after its delete: %v", id, err)
		}
	}
}
