//go:build cgo

package pkcs11_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/backends/pkcs11"
	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// BenchmarkDeriveSocketPKCS11 is a whole derive through pskvault on the
// shared SoftHSM2 token: in-process vault.Derive, and over the Unix socket
// (HTTP/JSON, Go client) with 1 and 8 concurrent clients. Run it in the
// same `go test -bench .` as BenchmarkRawSign to compare.
func BenchmarkDeriveSocketPKCS11(b *testing.B) {
	tok := pkcs11.SharedToken(b)
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "state")
	if err := vault.Init(ctx, dir, vault.Config{NodeID: "node-a", Backend: tok.URI()}); err != nil {
		b.Fatal(err)
	}
	v, err := vault.Open(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*7 + 1)
	}
	if _, err := v.Import(ctx, vault.ImportRequest{Identity: []byte("bench"), Key: key, Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"}); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(b.TempDir(), "run", "s.sock")
	l, err := api.Listen(sock, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	srv := api.NewServer(v, slog.New(slog.NewTextHandler(io.Discard, nil))).HTTPServer()
	go srv.Serve(l)
	defer srv.Close()

	req := client.DeriveRequest{Identity: []byte("bench"), Context: []byte("node-a|node-b"), Protocol: "tls1.3", KDF: "sha256"}
	b.Run("in-process", func(b *testing.B) {
		vr := vault.DeriveRequest{Identity: req.Identity, Context: req.Context, Target: vault.Target{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}}
		for b.Loop() {
			d, err := v.Derive(ctx, vr)
			if err != nil {
				b.Fatal(err)
			}
			clear(d.IPSKX)
		}
	})
	for _, clients := range []int{1, 8} {
		b.Run("socket-clients="+strconv.Itoa(clients), func(b *testing.B) {
			var mu sync.Mutex
			var lat []time.Duration
			var wg sync.WaitGroup
			per := b.N/clients + 1
			b.ResetTimer()
			for g := 0; g < clients; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := client.New(sock)
					defer c.Close()
					mine := make([]time.Duration, 0, per)
					for i := 0; i < per; i++ {
						t0 := time.Now()
						d, err := c.Derive(ctx, req)
						if err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(t0))
						clear(d.IPSKX)
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				}()
			}
			wg.Wait()
			b.StopTimer()
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
			}
			b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "derives/s")
		})
	}
}
