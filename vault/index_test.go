package vault_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/pskvault/pskvault/vault"
)

// TestImportIndexesFollowChanges: the skeleton and fingerprint indexes that
// replaced the import's scans (issue 12) follow every change and survive a
// restart: a revoked PSK's key stays refused, a deleted PSK's key and
// identity become free again, a held identity's confusable stays refused
// after a reopen.
func TestImportIndexesFollowChanges(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir() + "/v"
	if err := vault.Init(ctx, dir, vault.Config{NodeID: "node-a", Backend: "soft"}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { v.Close() }()
	kRevoked, kDeleted, kHeld := randKey(t, 32), randKey(t, 32), randKey(t, 32)
	for _, r := range []vault.ImportRequest{pairReq("revoked", kRevoked), pairReq("deleted", kDeleted), pairReq("paypal", kHeld)} {
		if _, err := v.Import(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Revoke(ctx, []byte("revoked"), "test"); err != nil {
		t.Fatal(err)
	}
	if err := v.Delete(ctx, []byte("deleted")); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		if _, err := v.Import(ctx, pairReq("again-revoked-"+when, kRevoked)); !errors.Is(err, vault.ErrKeyReused) {
			t.Fatalf("%s: the key of a revoked PSK: %v, want ErrKeyReused", when, err)
		}
		if _, err := v.Import(ctx, pairReq("again-held-"+when, kHeld)); !errors.Is(err, vault.ErrKeyReused) {
			t.Fatalf("%s: the key of a held PSK: %v, want ErrKeyReused", when, err)
		}
		r := pairReq("p\u0430ypal", randKey(t, 32)) // Cyrillic a
		r.AllowIdentityWarnings = true
		if _, err := v.Import(ctx, r); !errors.Is(err, vault.ErrIdentity) {
			t.Fatalf("%s: an identity confusable with a held one: %v, want ErrIdentity", when, err)
		}
	}
	check("before-reopen")
	// The deleted PSK's key and identity are free again.
	if _, err := v.Import(ctx, pairReq("deleted", kDeleted)); err != nil {
		t.Fatalf("re-import of a deleted PSK's identity and key: %v", err)
	}
	if err := v.Delete(ctx, []byte("deleted")); err != nil {
		t.Fatal(err)
	}
	v.Close()
	if v, err = vault.Open(ctx, dir); err != nil {
		t.Fatal(err)
	}
	check("after-reopen")
	if _, err := v.Import(ctx, pairReq("deleted", kDeleted)); err != nil {
		t.Fatalf("after reopen, re-import of a deleted PSK's identity and key: %v", err)
	}
}

// TestCount: status's counts come without copying the records (issue 12:
// it cloned and sorted every record to count them) and agree with List
// and MayDerive.
func TestCount(t *testing.T) {
	ctx := context.Background()
	v := newVault(t, "node-a")
	for _, id := range []string{"one", "two", "three"} {
		if _, err := v.Import(ctx, pairReq(id, randKey(t, 32))); err != nil {
			t.Fatal(err)
		}
	}
	alice := &vault.Caller{UID: 1000, GID: 1000}
	v.SetAccess(&vault.Access{Trusted: []uint32{0}, PSKs: map[string]vault.AccessRule{
		"two": {Client: []vault.Principal{{ID: 1000}}},
	}})
	for _, c := range []*vault.Caller{nil, {UID: 0}, alice, {UID: 1001, GID: 1001}} {
		want := 0
		for _, p := range listAll(t, v) {
			if v.MayDerive(c, p) {
				want++
			}
		}
		if got := countDerivable(t, v, c); got != want {
			t.Fatalf("CountDerivable(%+v) = %d, want %d", c, got, want)
		}
	}
	if got := countDerivable(t, v, alice); got != 1 {
		t.Fatalf("alice may derive %d PSKs, want 1", got)
	}
	if v.Count() != 3 || countDerivable(t, v, nil) != 3 {
		t.Fatalf("Count %d, CountDerivable(nil) %d, want 3", v.Count(), countDerivable(t, v, nil))
	}
	count := func() { v.Count(); countDerivable(t, v, &vault.Caller{UID: 0}) }
	few := testing.AllocsPerRun(100, count)
	for i := range 200 {
		if _, err := v.Import(ctx, pairReq(fmt.Sprintf("more-%d", i), randKey(t, 32))); err != nil {
			t.Fatal(err)
		}
	}
	if many := testing.AllocsPerRun(100, count); many > few {
		t.Fatalf("counting 203 records allocates %v times, 3 records %v: it reads records", many, few)
	}
}
