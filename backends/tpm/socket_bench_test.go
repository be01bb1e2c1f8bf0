package tpm_test

import (
	"testing"

	"github.com/pskvault/pskvault/backends/tpm"
	"github.com/pskvault/pskvault/internal/benchutil"
)

// BenchmarkDeriveSocketTPM is a whole derive through pskvault on the shared
// swtpm, hot key: in-process vault.Derive, and over the Unix socket (served
// as the daemon serves its data socket, HTTP/JSON, Go client) with 1 and 8
// concurrent clients. Run it in the same `go test -bench .` as
// BenchmarkRawTPM2HMAC to compare.
func BenchmarkDeriveSocketTPM(b *testing.B) {
	v := benchutil.Vault(b, tpm.SharedSimURI(b), "node-a")
	benchutil.DeriveSuite(b, v, benchutil.Serve(b, v, nil))
}
