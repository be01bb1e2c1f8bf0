package vault_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/pskvault/pskvault/vault"
)

// TestEachDerivable: the records EachDerivable gives a caller are exactly
// those MayDerive allows it, in identity order, for a caller named only in
// PSK rules (including later generations that inherit a rule through
// rotation) and for one the default rule admits; and for the first it
// reads the records the rules name instead of walking every record
// (the watch digest and the keys endpoint call it on every change).
func TestEachDerivable(t *testing.T) {
	v := openVault(t, "node-a")
	for i := range 40 {
		if _, err := v.Import(bg, pairReq(fmt.Sprintf("dev-%02d", i), randKey(t, 32))); err != nil {
			t.Fatal(err)
		}
	}
	// dev-07 rotated twice: dev-07.g2 and dev-07.g3 have no rule of their
	// own and inherit dev-07's.
	if _, _, err := v.Rotate(bg, []byte("dev-07"), vault.RotateRequest{NewIdentity: []byte("dev-07.g2")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Rotate(bg, []byte("dev-07.g2"), vault.RotateRequest{NewIdentity: []byte("dev-07.g3")}); err != nil {
		t.Fatal(err)
	}
	alice := &vault.Caller{UID: 1000, GID: 1000}
	bob := &vault.Caller{UID: 1001, GID: 1001}
	rule := vault.AccessRule{Client: []vault.Principal{{ID: 1000}}, Server: []vault.Principal{{ID: 1000}}}
	v.SetAccess(&vault.Access{
		Trusted: []uint32{0},
		Default: vault.AccessRule{Client: []vault.Principal{{ID: 1001}}, Server: []vault.Principal{{ID: 1001}}},
		PSKs:    map[string]vault.AccessRule{"dev-03": rule, "dev-07": rule, "dev-31": rule, "no-such-psk": rule},
	})
	check := func(c *vault.Caller, name string, wantFast bool) {
		t.Helper()
		var want []string
		for _, p := range listAll(t, v) {
			if v.MayDerive(c, p) {
				want = append(want, string(p.Identity))
			}
		}
		walks := vault.Walks(v)
		var got []string
		if err := v.EachDerivable(c, func(p *vault.PSK) bool { got = append(got, string(p.Identity)); return true }); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: EachDerivable gives %v, MayDerive allows %v", name, got, want)
		}
		if walked := vault.Walks(v) > walks; walked == wantFast {
			t.Fatalf("%s: walked every record: %v, want %v", name, walked, !wantFast)
		}
	}
	check(alice, "alice (named in rules only)", true)
	var first []string
	v.EachDerivable(alice, func(p *vault.PSK) bool { first = append(first, string(p.Identity)); return true })
	if fmt.Sprint(first) != "[dev-03 dev-07 dev-07.g2 dev-07.g3 dev-31]" {
		t.Fatalf("alice's records: %v", first)
	}
	check(bob, "bob (the default rule)", false)
	check(&vault.Caller{UID: 0}, "root", false)
	check(&vault.Caller{UID: 1002, GID: 1002}, "a stranger", true)
	// The chain stops at a deleted generation, as allows does.
	if err := v.Delete(bg, []byte("dev-07.g2")); err != nil {
		t.Fatal(err)
	}
	check(alice, "alice after a generation was deleted", true)
	var got [][]byte
	v.EachDerivable(alice, func(p *vault.PSK) bool { got = append(got, p.Identity); return true })
	for _, id := range got {
		if bytes.Equal(id, []byte("dev-07.g3")) {
			t.Fatal("dev-07.g3 still inherits dev-07's rule through a deleted generation")
		}
	}
}
