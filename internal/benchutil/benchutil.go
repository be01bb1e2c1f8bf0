// Package benchutil is the harness the socket benchmarks share: a vault
// holding one PSK, served on a Unix socket the way the daemon serves its
// data socket, and N concurrent clients splitting b.N requests, reporting
// p50/p99 latency (µs) and throughput (ops/s). It is imported by tests only.
package benchutil

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"os"
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

// Identity and Context name the PSK Vault imports and the derivation every
// benchmark asks for (SHA-256 EPSK, TLS 1.3, HKDF_SHA256: one Expand block).
var (
	Identity = []byte("bench")
	Context  = []byte("node-a|node-b")
)

// DeriveRequest is the socket request for the benchmark PSK.
func DeriveRequest() client.DeriveRequest {
	return client.DeriveRequest{Identity: Identity, Context: Context, Protocol: "tls1.3", KDF: "sha256"}
}

// Vault initialises a vault for node nodeID on backend (a backend URI such
// as "soft"), imports one random SHA-256 PSK between node-a and node-b under
// Identity, and closes the vault when b ends.
func Vault(b testing.TB, backend, nodeID string) *vault.Vault {
	b.Helper()
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "state")
	if err := vault.Init(ctx, dir, vault.Config{NodeID: nodeID, Backend: backend}); err != nil {
		b.Fatal(err)
	}
	v, err := vault.Open(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		b.Fatal(err)
	}
	defer clear(key)
	if _, err := v.Import(ctx, vault.ImportRequest{Identity: Identity, Key: key, Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"}); err != nil {
		b.Fatal(err)
	}
	return v
}

// Serve serves v on a fresh data socket as the daemon does (connection
// caps, SO_PEERCRED, access check, request log at its default level, info,
// to a discarding handler) and returns the socket path. Audit lines go to
// audit, or, when audit is nil, to a file opened O_APPEND in a temporary
// directory, like the daemon's audit.log.
func Serve(b testing.TB, v *vault.Vault, audit io.Writer) string {
	b.Helper()
	if audit == nil {
		f, err := os.OpenFile(filepath.Join(b.TempDir(), "audit.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		audit = f
	}
	sock := filepath.Join(b.TempDir(), "data", "s.sock")
	l, err := api.Listen(sock, 0o666)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s := api.NewServerWith(v, api.Options{Log: log, Audit: api.NewAudit(audit)})
	srv, _, err := s.Serve(l, api.SocketData)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	return sock
}

// Clients runs b.N calls of op spread over n clients, each a client.Client
// with its own keep-alive connection to sock, and reports the p50 and p99
// latency of one call in µs and the calls per second over all clients.
func Clients(b *testing.B, sock string, n int, op func(*client.Client) error) {
	b.Helper()
	// One warm-up call per client opens its connection outside the timing.
	cs := make([]*client.Client, n)
	for i := range cs {
		cs[i] = client.New(sock)
		defer cs[i].Close()
		if err := op(cs[i]); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([][]time.Duration, n)
	var wg sync.WaitGroup
	b.ResetTimer()
	for g := range n {
		count := b.N / n
		if g < b.N%n {
			count++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, count)
			for range count {
				t0 := time.Now()
				if err := op(cs[g]); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			lat[g] = mine
		}()
	}
	wg.Wait()
	b.StopTimer()
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "ops/s")
}

// Derive is one derive of the benchmark PSK over c; it wipes the answer.
func Derive(c *client.Client) error {
	d, err := c.Derive(context.Background(), DeriveRequest())
	if err == nil {
		clear(d.IPSKX)
	}
	return err
}

// DeriveSuite runs the derivation of the benchmark PSK side by side:
// "in-process" (vault.Derive, no socket), then "socket-clients=1" and
// "socket-clients=8" over sock.
func DeriveSuite(b *testing.B, v *vault.Vault, sock string) {
	ctx := context.Background()
	b.Run("in-process", func(b *testing.B) {
		vr := vault.DeriveRequest{Identity: Identity, Context: Context, Target: vault.Target{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}}
		for b.Loop() {
			d, err := v.Derive(ctx, vr)
			if err != nil {
				b.Fatal(err)
			}
			clear(d.IPSKX)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	for _, n := range []int{1, 8} {
		b.Run("socket-clients="+strconv.Itoa(n), func(b *testing.B) { Clients(b, sock, n, Derive) })
	}
}
