package vault_test

import (
	"errors"
	"testing"

	"github.com/pskvault/pskvault/vault"
)

// TestUnindexedRecordRefused: a record in vault.db that the key index does
// not list (written by hand, or by a pskvault from before the indexes)
// could share its key with another record unseen, so it is not served and
// check reports it, until the indexes are rebuilt.
func TestUnindexedRecordRefused(t *testing.T) {
	v := openVault(t, "node-a")
	if _, err := v.Import(bg, pairReq("indexed", randKey(t, 32))); err != nil {
		t.Fatal(err)
	}
	p, err := v.Get([]byte("indexed"))
	if err != nil {
		t.Fatal(err)
	}
	// Two records with one key, written without the index: the index
	// cannot see that they share it.
	fp := randKey(t, 32)
	var copies []*vault.PSK
	for _, id := range []string{"unindexed", "unindexed-too"} {
		c := *p
		c.Identity, c.Fingerprint = []byte(id), fp
		c.KeySlot, c.Sealed = 0, nil
		copies = append(copies, &c)
	}
	if err := vault.PutRecordsUnindexed(v, copies); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Derive(bg, vault.DeriveRequest{Identity: []byte("unindexed"), Target: tls256}); !errors.Is(err, vault.ErrMustViolation) {
		t.Fatalf("derive of a record the key index does not list: %v, want ErrMustViolation", err)
	}
	found := false
	for _, a := range checkAll(t, v).PSKs {
		for _, f := range a.Findings {
			found = found || (a.Identity == "unindexed" && f.Rule == "key-reuse-unverified" && f.Level == vault.LevelMust)
		}
	}
	if !found {
		t.Fatal("check does not report the unindexed record")
	}
}
