package fleet

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkFleetProvision10k provisions 10,000 links over 10,000 nodes,
// each node a generated TPM parent: one key per link, two wrapped bundles
// per link, written 0600 and synced, recorded in the embedded registry.
// Run it once: go test ./fleet -run '^$' -bench FleetProvision10k -benchtime 1x
func BenchmarkFleetProvision10k(b *testing.B) {
	const n = 10000
	inv := &Inventory{Nodes: map[string]*Node{}}
	for i := range n {
		pub, err := GenerateTPMParent()
		if err != nil {
			b.Fatal(err)
		}
		id := fmt.Sprintf("edge-%05d", i)
		inv.Nodes[id] = &Node{ID: id, Kind: "tpm", ParentPub: pub}
	}
	for i := range n {
		inv.Links = append(inv.Links, Link{Client: fmt.Sprintf("edge-%05d", i), Server: fmt.Sprintf("edge-%05d", (i+1)%n)})
	}
	pol := Policy{Targets: []string{"tls1.3/sha256", "tls1.3/sha384", "dtls1.3/sha256", "dtls1.3/sha384"}, ValidFor: 2160 * time.Hour}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		reg, err := OpenRegistry(filepath.Join(dir, "registry.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		sum, err := Run(inv, reg, filepath.Join(dir, "out"), pol, 0, nil)
		el := time.Since(start)
		b.StopTimer()
		reg.Close()
		if err != nil || sum.Issued != n {
			b.Fatalf("issued %d of %d: %v", sum.Issued, n, err)
		}
		b.ReportMetric(float64(n)/el.Seconds(), "links/s")
		b.ReportMetric(el.Seconds(), "s/run")
		b.StartTimer()
	}
}
