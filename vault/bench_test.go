package vault_test

import (
	"context"
	"testing"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// BenchmarkDeriveSoft measures, side by side, the raw backend operation (one
// HMAC under a sealed PRK) and a whole in-process derivation through the
// vault (policy checks, importer plan, one or two backend HMACs).
func BenchmarkDeriveSoft(b *testing.B) {
	v := openVault(b, "node-a")
	ctx := context.Background()
	if _, err := v.Import(ctx, pairwise("bench")); err != nil {
		b.Fatal(err)
	}
	be, err := vault.OpenBackend(ctx, vault.BackendConfig{URI: "soft", StateDir: b.TempDir(), Init: true})
	if err != nil {
		b.Fatal(err)
	}
	prk, _ := importer.Extract(importer.SHA256, key(32))
	handle, err := be.StoreKey(ctx, vault.StoreRequest{PRK: prk, Hash: importer.SHA256})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 32+60)
	b.Run("raw-backend-hmac", func(b *testing.B) {
		for b.Loop() {
			if _, err := be.HMAC(ctx, vault.KeyRef{Handle: handle, Hash: importer.SHA256}, data); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, t := range []vault.Target{{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}, {Protocol: importer.TLS13, KDF: importer.HKDFSHA384}} {
		b.Run("vault-derive-"+t.String(), func(b *testing.B) {
			req := vault.DeriveRequest{Identity: []byte("bench"), Context: []byte("node-a|node-b"), Target: t}
			for b.Loop() {
				d, err := v.Derive(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				clear(d.IPSKX)
			}
		})
	}
}
