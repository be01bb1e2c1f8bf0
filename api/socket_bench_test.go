package api_test

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
	_ "github.com/pskvault/pskvault/backends/soft"
	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// benchDaemon serves a soft-backend vault holding one PSK on a Unix socket.
func benchDaemon(b *testing.B) (*vault.Vault, string) {
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "state")
	if err := vault.Init(ctx, dir, vault.Config{NodeID: "node-a", Backend: "soft"}); err != nil {
		b.Fatal(err)
	}
	v, err := vault.Open(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	if _, err := v.Import(ctx, vault.ImportRequest{Identity: []byte("bench"), Key: randomKey(b), Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"}); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(b.TempDir(), "run", "s.sock")
	l, err := api.Listen(sock, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	srv := api.NewServer(v, slog.New(slog.NewTextHandler(io.Discard, nil))).HTTPServer()
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return v, sock
}

// reportLatency adds p50 and p99 in microseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkDeriveSocket puts the in-process derive and the same derive over
// the Unix socket (HTTP/JSON, Go client, keep-alive) side by side, with 1 and
// 8 concurrent clients.
func BenchmarkDeriveSocket(b *testing.B) {
	v, sock := benchDaemon(b)
	ctx := context.Background()
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
		b.Run("socket-clients="+string(rune('0'+clients)), func(b *testing.B) {
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
			reportLatency(b, lat)
			b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "derives/s")
		})
	}
}

func randomKey(b *testing.B) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		b.Fatal(err)
	}
	return k
}
