//go:build cgo

package pkcs11_test

import (
	"testing"

	"github.com/pskvault/pskvault/backends/pkcs11"
	"github.com/pskvault/pskvault/internal/benchutil"
)

// BenchmarkDeriveSocketPKCS11 is a whole derive through pskvault on the
// shared SoftHSM2 token: in-process vault.Derive, and over the Unix socket
// (served as the daemon serves its data socket, HTTP/JSON, Go client) with
// 1 and 8 concurrent clients. Run it in the same `go test -bench .` as
// BenchmarkRawSign to compare.
func BenchmarkDeriveSocketPKCS11(b *testing.B) {
	v := benchutil.Vault(b, pkcs11.SharedToken(b).URI(), "node-a")
	benchutil.DeriveSuite(b, v, benchutil.Serve(b, v, nil))
}
