package importer_test

import (
	"testing"

	"github.com/pskvault/pskvault/importer"
)

type benchCase struct {
	name string
	hash importer.Hash
	kdf  importer.KDF
}

var benchCases = []benchCase{
	{"sha256", importer.SHA256, importer.HKDFSHA256},
	{"sha384", importer.SHA384, importer.HKDFSHA384},
	{"sha256-to-sha384", importer.SHA256, importer.HKDFSHA384}, // 2 HMAC blocks
}

func benchIdentity(k importer.KDF) importer.Identity {
	return importer.Identity{
		External: []byte("pskvault-test-identity"),
		Context:  []byte("client=02:00:5e:00:53:01 server=02:00:5e:00:53:02"),
		Protocol: importer.TLS13,
		KDF:      k,
	}
}

func testEPSK(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// BenchmarkImport: the whole importer in memory (NewPlan, Extract, Expand).
func BenchmarkImport(b *testing.B) {
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			epsk, id := testEPSK(c.hash.Size()), benchIdentity(c.kdf)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := importer.Import(c.hash, epsk, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPlanExpand: the per-request path of a backend holding the PRK
// (NewPlan + Expand), with SoftwareMAC standing in for the backend.
func BenchmarkPlanExpand(b *testing.B) {
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			prk, err := importer.Extract(c.hash, testEPSK(c.hash.Size()))
			if err != nil {
				b.Fatal(err)
			}
			mac, id := importer.SoftwareMAC(c.hash, prk), benchIdentity(c.kdf)
			b.ReportAllocs()
			for b.Loop() {
				plan, err := importer.NewPlan(c.hash, id)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := plan.Expand(mac); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
