package vault_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pskvault/pskvault/vault"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkRecordFormatAtScale compares the binary record form (codec.go)
// with the JSON one it replaced at N records (shaped as in
// BenchmarkStorageAtScale): the size of vault.db after bolt.Compact
// (vault-MiB; the file is mmapped, so at scale its size is resident
// memory once read) and one read transaction that decodes every record,
// as a full list or check does (ns/op; ns/record). The JSON vault.db is
// the binary one with every record rewritten as JSON, as diskRecord wrote
// them before. Sizes: PSKVAULT_BENCH_SIZES (default 100000).
//
//	PSKVAULT_BENCH_SIZES=100000,1000000 go test -run '^$' \
//	  -bench BenchmarkRecordFormatAtScale -benchtime 3x -timeout 60m ./vault
func BenchmarkRecordFormatAtScale(b *testing.B) {
	sizes := []int{100_000}
	if s := os.Getenv("PSKVAULT_BENCH_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatal(err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		root := b.TempDir()
		built := filepath.Join(root, "built")
		buildScaleVault(b, built, n)
		for _, format := range []string{"binary", "json"} {
			path := filepath.Join(root, format+".db")
			copyVaultDB(b, filepath.Join(built, "vault.db"), path, format == "json")
			st, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("records=%d/%s", n, format), func(b *testing.B) {
				db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				for b.Loop() {
					seen := 0
					err := db.View(func(tx *bolt.Tx) error {
						return tx.Bucket([]byte("psks")).ForEach(func(k, v []byte) error {
							if _, err := vault.DecodeRecord(v); err != nil {
								return err
							}
							seen++
							return nil
						})
					})
					if err != nil || seen != n {
						b.Fatalf("decoded %d of %d records: %v", seen, n, err)
					}
				}
				b.ReportMetric(float64(st.Size())/(1<<20), "vault-MiB")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/record")
			})
		}
	}
}

// copyVaultDB copies the vault.db at src to dst through bolt.Compact,
// with every record rewritten as JSON first when toJSON.
func copyVaultDB(b *testing.B, src, dst string, toJSON bool) {
	b.Helper()
	if toJSON {
		tmp := filepath.Join(b.TempDir(), "vault.db")
		compactFile(b, src, tmp)
		rewriteJSON(b, tmp)
		src = tmp
	}
	compactFile(b, src, dst)
}

func compactFile(b *testing.B, src, dst string) {
	b.Helper()
	in, err := bolt.Open(src, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := bolt.Open(dst, 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	if err := bolt.Compact(out, in, 1<<20); err != nil {
		b.Fatal(err)
	}
}

// rewriteJSON rewrites every record of the vault.db at path as JSON, as
// diskRecord wrote them before codec.go.
func rewriteJSON(b *testing.B, path string) {
	b.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var keys [][]byte
	db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("psks")).ForEach(func(k, _ []byte) error {
			keys = append(keys, append([]byte(nil), k...))
			return nil
		})
	})
	for lo := 0; lo < len(keys); lo += 50_000 {
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket([]byte("psks"))
			for _, k := range keys[lo:min(len(keys), lo+50_000)] {
				p, err := vault.DecodeRecord(bk.Get(k))
				if err != nil {
					return err
				}
				raw, err := json.Marshal(p)
				if err != nil {
					return err
				}
				if err := bk.Put(k, raw); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
