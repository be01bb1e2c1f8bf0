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

// TestDeriveDoesNotWaitForWrites: while a write transaction holds the
// database, a delete is waiting for it with the vault's write lock held,
// and another delete is inside its key-slot shredding (a backend-and-disk
// step), a derivation is still answered (issue 12: an import or delete
// used to hold the index lock while it waited for the database, so every
// derive stalled behind the compaction every delete ran).
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
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	defer func() { unblock(); wg.Wait() }()

	// The first delete stops inside its shredding, holding the write lock.
	shredding := make(chan struct{})
	var once sync.Once
	vault.SetSlotFault(v, func(step string) error {
		if step == "shred" {
			once.Do(func() { close(shredding) })
			<-release
		}
		return nil
	})
	wg.Add(1)
	go func() { defer wg.Done(); errs <- v.Delete(ctx, []byte("first")) }()
	<-shredding

	// Another write transaction holds the database.
	held := make(chan struct{})
	wg.Add(1)
	go func() { defer wg.Done(); errs <- vault.HoldWrite(v, held, release) }()
	<-held

	// The second delete queues behind both.
	wg.Add(1)
	go func() { defer wg.Done(); errs <- v.Delete(ctx, []byte("second")) }()

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
			t.Fatalf("derive during writes: %v", err)
		}
	case <-time.After(10 * time.Second):
		unblock()
		t.Fatal("derive waited for the writes in progress (still blocked after 10 s)")
	}
	unblock()
	wg.Wait()
	vault.SetSlotFault(v, nil)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	for _, id := range []string{"first", "second"} {
		if _, err := v.Get([]byte(id)); !errors.Is(err, vault.ErrNotFound) {
			t.Fatalf("%s still there after its delete: %v", id, err)
		}
	}
}
