package vault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
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

// BenchmarkStorageAtScale measures the storage layer at N records (issue
// 12): opening the vault (time, and Go heap in use after it), derive
// latency, and delete and revoke latency (p50/p99 of the timed ops).
// The N records are written offline in transactions of 50,000
// (vault.PutRecords: the vault's own record format, each handle sealed
// under a data key of its own), shaped like imported soft records (text
// identities, random key fingerprints) and sharing one real soft key, so
// that each derives. Sizes: PSKVAULT_BENCH_SIZES (default 1000,100000).
//
//	PSKVAULT_BENCH_SIZES=1000,100000,1000000 go test -run '^$' \
//	  -bench BenchmarkStorageAtScale -benchtime 400x -timeout 60m ./vault
func BenchmarkStorageAtScale(b *testing.B) {
	sizes := []int{1_000, 100_000}
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
	ctx := context.Background()
	tgt := vault.Target{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}
	for _, n := range sizes {
		dir := filepath.Join(b.TempDir(), "v")
		buildScaleVault(b, dir, n)
		reopen := func() *vault.Vault {
			v, err := vault.Open(ctx, dir)
			if err != nil {
				b.Fatal(err)
			}
			return v
		}
		idOf := func(i int) []byte { return []byte(fmt.Sprintf("device-%07d", i)) }
		b.Run(fmt.Sprintf("records=%d/open", n), func(b *testing.B) {
			var heap uint64
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				v := reopen()
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap = after.HeapInuse - min(after.HeapInuse, before.HeapInuse)
				b.StopTimer()
				v.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
		})
		v := reopen()
		b.Run(fmt.Sprintf("records=%d/derive", n), func(b *testing.B) {
			var ds []time.Duration
			for b.Loop() {
				id := idOf(mrand.IntN(n))
				t0 := time.Now()
				d, err := v.Derive(ctx, vault.DeriveRequest{Identity: id, Target: tgt})
				ds = append(ds, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				clear(d.IPSKX)
			}
			reportPercentiles(b, ds, time.Microsecond, "us")
		})
		next := 0 // records are destroyed from the top down
		for _, op := range []string{"delete", "revoke"} {
			b.Run(fmt.Sprintf("records=%d/%s", n, op), func(b *testing.B) {
				var ds []time.Duration
				for b.Loop() {
					next++
					id := idOf(n - next)
					t0 := time.Now()
					var err error
					if op == "delete" {
						err = v.Delete(ctx, id)
					} else {
						_, err = v.Revoke(ctx, id, "bench")
					}
					ds = append(ds, time.Since(t0))
					if err != nil {
						b.Fatal(err)
					}
				}
				reportPercentiles(b, ds, time.Millisecond, "ms")
			})
		}
		v.Close()
	}
}

func reportPercentiles(b *testing.B, ds []time.Duration, unit time.Duration, name string) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))]) / float64(unit) }
	b.ReportMetric(at(0.50), "p50-"+name)
	b.ReportMetric(at(0.99), "p99-"+name)
}

// buildScaleVault makes a soft vault in dir holding n records (see
// BenchmarkStorageAtScale).
func buildScaleVault(b *testing.B, dir string, n int) {
	ctx := context.Background()
	if err := vault.Init(ctx, dir, vault.Config{NodeID: "node-a", Backend: "soft"}); err != nil {
		b.Fatal(err)
	}
	v, err := vault.Open(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	tmpl := pairwise("template")
	tmpl.Key = key(32)
	if _, err := v.Import(ctx, tmpl); err != nil {
		b.Fatal(err)
	}
	t, err := v.Get(tmpl.Identity)
	if err != nil {
		b.Fatal(err)
	}
	if err := v.Delete(ctx, tmpl.Identity); err != nil {
		b.Fatal(err)
	}
	const chunk = 50_000
	for lo := 0; lo < n; lo += chunk {
		ps := make([]*vault.PSK, 0, chunk)
		for i := lo; i < min(n, lo+chunk); i++ {
			fp := make([]byte, 32)
			rand.Read(fp)
			ps = append(ps, &vault.PSK{
				Identity: []byte(fmt.Sprintf("device-%07d", i)), Hash: importer.SHA256, KeyBits: 256,
				ClientNode: "node-a", ServerNode: "node-b", Targets: vault.AllTargets,
				Created: time.Now().UTC().Truncate(time.Second), State: vault.StateActive,
				Origin: "imported", Backend: "soft", Handle: bytes.Clone(t.Handle),
				Policy: vault.Policy{Fingerprint: fp, Generation: 1},
			})
		}
		if err := vault.PutRecords(v, ps); err != nil {
			b.Fatal(err)
		}
	}
}
