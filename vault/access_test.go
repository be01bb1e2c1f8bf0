package vault_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// TestDeriveChecksCaller: the vault, not the socket layer, decides who may
// derive; a refused caller gets the very error of an unknown PSK.
func TestDeriveChecksCaller(t *testing.T) {
	v := openVault(t, "node-a")
	ctx := context.Background()
	tls := vault.Target{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}
	if _, err := v.Import(ctx, vault.ImportRequest{Identity: []byte("pair"), Key: randKey(t, 32), Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"}); err != nil {
		t.Fatal(err)
	}
	group := vault.ImportRequest{Identity: []byte("grp"), Key: randKey(t, 32), Hash: importer.SHA256}
	group.Group = []string{"node-a", "node-b", "node-c"}
	if _, err := v.Import(ctx, group); err != nil {
		t.Fatal(err)
	}
	alice := &vault.Caller{UID: 1000, GID: 1000}
	mallory := &vault.Caller{UID: 1001, GID: 1001}
	v.SetAccess(&vault.Access{Trusted: []uint32{0}, PSKs: map[string]vault.AccessRule{
		"pair": {Client: []vault.Principal{{ID: 1000}}},
		"grp":  {Client: []vault.Principal{{ID: 1000}}}, // client role only
	}})

	if _, err := v.Derive(ctx, vault.DeriveRequest{Identity: []byte("pair"), Target: tls, Caller: alice}); err != nil {
		t.Fatalf("allowed caller refused: %v", err)
	}
	_, denied := v.Derive(ctx, vault.DeriveRequest{Identity: []byte("pair"), Target: tls, Caller: mallory})
	_, unknown := v.Derive(ctx, vault.DeriveRequest{Identity: []byte("no-such"), Target: tls, Caller: mallory})
	if !errors.Is(denied, vault.ErrDenied) || !errors.Is(denied, vault.ErrNotFound) || denied.Error() != unknown.Error() {
		t.Fatalf("denial must read exactly like an unknown PSK: %v vs %v", denied, unknown)
	}
	// Denied before any other check: a wrong target must not tell mallory the PSK exists.
	_, err := v.Derive(ctx, vault.DeriveRequest{Identity: []byte("pair"), Target: vault.Target{Protocol: importer.TLS13, KDF: 9}, Caller: mallory})
	if !errors.Is(err, vault.ErrDenied) {
		t.Fatalf("a bad target was checked before the caller: %v", err)
	}
	if _, err := v.Derive(ctx, vault.DeriveRequest{Identity: []byte("grp"), Target: tls, Peer: "node-b", Role: "client", Caller: alice}); err != nil {
		t.Fatalf("group PSK, allowed role: %v", err)
	}
	if _, err := v.Derive(ctx, vault.DeriveRequest{Identity: []byte("grp"), Target: tls, Peer: "node-b", Role: "server", Caller: alice}); !errors.Is(err, vault.ErrDenied) {
		t.Fatalf("group PSK, role without rights: %v", err)
	}
	// The role taken from a received node context is checked too.
	nc, _ := vault.NodeContext("node-b", "node-a") // node-a is the server here
	if _, err := v.Derive(ctx, vault.DeriveRequest{Identity: []byte("grp"), Context: nc, Target: tls, Caller: alice}); !errors.Is(err, vault.ErrDenied) {
		t.Fatalf("group PSK, server role from the context: %v", err)
	}
	if _, err := v.Derive(ctx, vault.DeriveRequest{Identity: []byte("grp"), Context: nc, Target: tls}); err != nil {
		t.Fatalf("in-process caller (nil) is trusted: %v", err)
	}
	if !v.MayDerive(alice, mustGet(t, v, "grp")) || v.MayDerive(mallory, mustGet(t, v, "grp")) {
		t.Fatal("MayDerive disagrees with the access lists")
	}
}

func mustGet(t *testing.T, v *vault.Vault, id string) *vault.PSK {
	p, err := v.Get([]byte(id))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAccessFollowsRotation: a new generation keeps the link's access list
// (its own rule, when it gets one, wins), and a rotation whose new generation
// was deleted can be done again.
func TestAccessFollowsRotation(t *testing.T) {
	v := openVault(t, "node-a")
	ctx := context.Background()
	tls := vault.Target{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}
	if _, err := v.Import(ctx, vault.ImportRequest{Identity: []byte("link"), Key: randKey(t, 32), Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"}); err != nil {
		t.Fatal(err)
	}
	haproxy := &vault.Caller{UID: 1000, GID: 1000}
	other := &vault.Caller{UID: 1001, GID: 1001}
	v.SetAccess(&vault.Access{Trusted: []uint32{0},
		Default: vault.AccessRule{Client: []vault.Principal{{ID: 1001}}},
		PSKs:    map[string]vault.AccessRule{"link": {Client: []vault.Principal{{ID: 1000}}}},
	})
	g2, key, err := v.Rotate(ctx, []byte("link"), vault.RotateRequest{NewIdentity: []byte("link.g2"), Overlap: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	clear(key)
	if _, err := v.Derive(ctx, vault.DeriveRequest{Identity: g2.Identity, Target: tls, Caller: haproxy}); err != nil {
		t.Fatalf("the link's caller lost access after rotation: %v", err)
	}
	if _, err := v.Derive(ctx, vault.DeriveRequest{Identity: g2.Identity, Target: tls, Caller: other}); !errors.Is(err, vault.ErrDenied) {
		t.Fatalf("the default rule applied to a rotated PSK that has a rule: %v", err)
	}

	// The new generation's key never reached the peer: delete it, rotate again.
	if err := v.Delete(ctx, g2.Identity); err != nil {
		t.Fatal(err)
	}
	g2b, key, err := v.Rotate(ctx, []byte("link"), vault.RotateRequest{NewIdentity: []byte("link.g2b"), Overlap: time.Hour})
	if err != nil {
		t.Fatalf("rotate again after the new generation was deleted: %v", err)
	}
	clear(key)
	if _, _, err := v.Rotate(ctx, []byte("link"), vault.RotateRequest{NewIdentity: []byte("link.g2c"), Overlap: time.Hour}); !errors.Is(err, vault.ErrInvalid) {
		t.Fatalf("a second rotation while %s lives: %v", g2b.Identity, err)
	}
	if _, err := vault.ParsePrincipal("user:4294967295"); !errors.Is(err, vault.ErrInvalid) {
		t.Fatalf("the unknown-caller id was accepted as a principal: %v", err)
	}
}
