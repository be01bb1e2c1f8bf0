package api_test

import (
	"testing"

	_ "github.com/pskvault/pskvault/backends/soft"
	"github.com/pskvault/pskvault/internal/benchutil"
)

// BenchmarkDeriveSocket puts the in-process derive and the same derive over
// the Unix socket (HTTP/JSON, Go client, keep-alive; served as the daemon
// serves its data socket, audit line to a file) side by side, with 1 and 8
// concurrent clients, on the soft backend.
func BenchmarkDeriveSocket(b *testing.B) {
	v := benchutil.Vault(b, "soft", "node-a")
	benchutil.DeriveSuite(b, v, benchutil.Serve(b, v, nil))
}
