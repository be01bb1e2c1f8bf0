package vault_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// BenchmarkImportAtSize measures one API import (soft backend: identity
// rules, entropy, key-reuse check, backend store, two fsynced writes) into
// a vault that already holds N records. The N records are written offline
// in one transaction (vault.PutRecords), shaped like imported ones: text
// identities and key fingerprints. Import cost should not grow with N
// (issue 12).
func BenchmarkImportAtSize(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			v := openVault(b, "node-a")
			ctx := context.Background()
			ps := make([]*vault.PSK, n)
			for i := range ps {
				fp := make([]byte, 32)
				rand.Read(fp)
				ps[i] = &vault.PSK{
					Identity: []byte(fmt.Sprintf("device-%07d", i)), Hash: importer.SHA256, KeyBits: 256,
					ClientNode: "node-a", ServerNode: "node-b", Targets: vault.AllTargets,
					Created: time.Now().UTC().Truncate(time.Second), State: vault.StateActive,
					Origin: "imported", Backend: "soft",
					Policy: vault.Policy{Fingerprint: fp, Generation: 1},
				}
			}
			if err := vault.PutRecords(v, ps); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				req := pairwise(fmt.Sprintf("new-device-%07d", i))
				req.Key = make([]byte, 32)
				rand.Read(req.Key)
				if _, err := v.Import(ctx, req); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
