package vault_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// BenchmarkFdatasync is the state file system's fdatasync latency (what a
// single import or a destruction waits for, once or twice): p50 and p99
// over b.N writes of 4 KiB at the end of a file in a temporary directory.
func BenchmarkFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	var ds []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkOpenAtSize: vault.Open of a vault of 100,000 records (written
// with ImportBatch); ns/op per open, and the heap it keeps.
func BenchmarkOpenAtSize(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "v")
	ctx := context.Background()
	if err := vault.Init(ctx, dir, vault.Config{NodeID: "node-a", Backend: "soft"}); err != nil {
		b.Fatal(err)
	}
	v, err := vault.Open(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	for k := 0; k < 100_000; k += 10_000 {
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
	v.Close()
	var heap uint64
	for b.Loop() {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		v, err := vault.Open(ctx, dir)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		heap = m1.HeapAlloc - m0.HeapAlloc
		v.Close()
	}
	b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
}
