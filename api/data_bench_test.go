package api_test

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// dataDaemon serves a soft-backend vault (node-b, the server of one PSK,
// node-a the client of another) on a data socket, as the daemon does:
// connection caps, peer credentials, access check, audit log.
func dataDaemon(b *testing.B) string {
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "state")
	if err := vault.Init(ctx, dir, vault.Config{NodeID: "node-b", Backend: "soft"}); err != nil {
		b.Fatal(err)
	}
	v, err := vault.Open(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	key := make([]byte, 32)
	rand.Read(key)
	if _, err := v.Import(ctx, vault.ImportRequest{Identity: []byte("bench"), Key: key, Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"}); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(b.TempDir(), "data", "s.sock")
	l, err := api.Listen(sock, 0o666)
	if err != nil {
		b.Fatal(err)
	}
	s := api.NewServerWith(v, api.Options{Audit: api.NewAudit(discard{})})
	srv, _, err := s.Serve(l, api.SocketData)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	return sock
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkDataSocket measures derive and lookup on the data socket with 1
// and 8 concurrent clients (each its own keep-alive connection), reporting
// p50/p99 latency and throughput.
func BenchmarkDataSocket(b *testing.B) {
	sock := dataDaemon(b)
	ctx := context.Background()
	wire, _ := importer.Identity{External: []byte("bench"), Context: []byte("node-a|node-b"), Protocol: importer.TLS13, KDF: importer.HKDFSHA256}.Marshal()
	ops := map[string]func(*client.Client) error{
		"derive": func(c *client.Client) error {
			d, err := c.Derive(ctx, client.DeriveRequest{Identity: []byte("bench"), Context: []byte("node-a|node-b"), Protocol: "tls1.3", KDF: "sha256"})
			if err == nil {
				clear(d.IPSKX)
			}
			return err
		},
		"lookup": func(c *client.Client) error {
			d, err := c.Lookup(ctx, wire, []byte("node-a|node-b"), "tls1.3", "sha256")
			if err == nil {
				clear(d.IPSKX)
			}
			return err
		},
	}
	for _, op := range []string{"derive", "lookup"} {
		for _, clients := range []int{1, 8} {
			b.Run(op+"/clients="+strconv.Itoa(clients), func(b *testing.B) {
				var mu sync.Mutex
				var lat []time.Duration
				var wg sync.WaitGroup
				per := b.N/clients + 1
				b.ResetTimer()
				for range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						c := client.New(sock)
						defer c.Close()
						mine := make([]time.Duration, 0, per)
						for range per {
							t0 := time.Now()
							if err := ops[op](c); err != nil {
								b.Error(err)
								return
							}
							mine = append(mine, time.Since(t0))
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
					b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "ops/s")
				}
			})
		}
	}
}
