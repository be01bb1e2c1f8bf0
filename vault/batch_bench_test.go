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

// BenchmarkPages: a full walk of ListPage and CheckPage, pages of 1,000,
// over 20,000 records; ns/op per walk.
func BenchmarkPages(b *testing.B) {
	v := openVault(b, "node-a")
	ctx := context.Background()
	for k := 0; k < 20_000; k += 10_000 {
		n := 0
		if _, err := v.ImportBatch(ctx, 0, func() (*vault.ImportRequest, error) {
			if n == 10_000 {
				return nil, io.EOF
			}
			n++
			r := pairwise(fmt.Sprintf("device-%08d", k+n))
			r.Key = make([]byte, 32)
			rand.Read(r.Key)
			return &r, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("list", func(b *testing.B) {
		for b.Loop() {
			var after []byte
			for {
				_, next, err := v.ListPage(after, 1000)
				if err != nil {
					b.Fatal(err)
				}
				if after = next; next == nil {
					break
				}
			}
		}
	})
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			var after []byte
			for {
				_, next, err := v.CheckPage(after, 1000)
				if err != nil {
					b.Fatal(err)
				}
				if after = next; next == nil {
					break
				}
			}
		}
	})
}
