package examples

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkAgentRevoke measures pskvault agent's delay from the answer to
// a revoke (the Go client's Revoke returned) to the key file rewritten
// without the key and to its reload command run (/usr/bin/touch creating
// a marker file). One daemon (soft backend), one agent process,
// both real processes; each iteration creates a PSK, waits until the
// agent has written it (not timed), revokes it, and waits for the
// rewrite. Both are observed by polling every 100 µs (file mtimes are
// tick-granular, too coarse here), so each figure may be up to ~0.2 ms
// late. Reported: p50 and p99 of both delays, in ms.
func BenchmarkAgentRevoke(b *testing.B) {
	n := newNode(b, "node-b")
	dir := b.TempDir()
	os.Chmod(dir, 0o700)
	file, marker := filepath.Join(dir, "server.psk"), filepath.Join(dir, "reloaded")
	cfg := filepath.Join(dir, "agent.json")
	raw := fmt.Sprintf(`{"data_socket":%q,"outputs":[{"path":%q,"format":"stunnel","role":"server","reload":["/usr/bin/touch",%q]}]}`, n.data, file, marker)
	os.WriteFile(cfg, []byte(raw), 0o600)
	ag := startAgent(b, cfg)
	waitFor := func(cond func() bool) {
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("the agent did not rewrite the file within 10 s:\n%s", ag.stderr.String())
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	var written, reloaded []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		id := fmt.Sprintf("bench-%d", i)
		n.cli(b, "psk", "create", "--identity", id, "--client", "node-a", "--server", "node-b", "--out", filepath.Join(dir, id))
		os.Remove(filepath.Join(dir, id))
		hexID := fmt.Sprintf("%x", id)
		waitFor(func() bool { b, _ := os.ReadFile(file); return strings.Contains(string(b), hexID) })
		os.Remove(marker)
		b.StartTimer()
		if _, err := n.client.Revoke(b.Context(), []byte(id), "bench"); err != nil {
			b.Fatal(err)
		}
		answered := time.Now()
		var w, r time.Duration
		waitFor(func() bool {
			if w == 0 {
				if c, _ := os.ReadFile(file); !strings.Contains(string(c), hexID) {
					w = time.Since(answered)
				}
			}
			if r == 0 {
				if _, err := os.Stat(marker); err == nil {
					r = time.Since(answered)
				}
			}
			return w != 0 && r != 0
		})
		written = append(written, w)
		reloaded = append(reloaded, r)
	}
	b.StopTimer()
	pct := func(d []time.Duration, p float64) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(written, 0.5), "written-p50-ms")
	b.ReportMetric(pct(written, 0.99), "written-p99-ms")
	b.ReportMetric(pct(reloaded, 0.5), "reloaded-p50-ms")
	b.ReportMetric(pct(reloaded, 0.99), "reloaded-p99-ms")
}
