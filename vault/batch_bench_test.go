package vault_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"testing"

	"github.com/pskvault/pskvault/vault"
)

// BenchmarkImportBatch measures vault.ImportBatch (soft backend, every
// single-import check, one transaction) in batches of 10,000 fresh PSKs;
// ns/op is per PSK.
func BenchmarkImportBatch(b *testing.B) {
	v := openVault(b, "node-a")
	ctx := context.Background()
	i := 0
	b.ResetTimer()
	for b.Loop() {
		n := 0
		if _, err := v.ImportBatch(ctx, 0, func() (*vault.ImportRequest, error) {
			if n == 10_000 {
				return nil, io.EOF
			}
			n++
			i++
			r := pairwise(fmt.Sprintf("device-%08d", i))
			r.Key = make([]byte, 32)
			rand.Read(r.Key)
			return &r, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i), "ns/psk")
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "psks/s")
}
