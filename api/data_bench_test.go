package api_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/internal/benchutil"
)

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkDataSocket measures derive and lookup on the data socket (node-b,
// the server of the PSK; connection caps, peer credentials, access check,
// audit log to a discarding writer) with 1 and 8 concurrent clients, each
// its own keep-alive connection, reporting p50/p99 latency and throughput.
func BenchmarkDataSocket(b *testing.B) {
	v := benchutil.Vault(b, "soft", "node-b")
	sock := benchutil.Serve(b, v, discard{})
	wire, _ := importer.Identity{External: benchutil.Identity, Context: benchutil.Context, Protocol: importer.TLS13, KDF: importer.HKDFSHA256}.Marshal()
	ops := map[string]func(*client.Client) error{
		"derive": benchutil.Derive,
		"lookup": func(c *client.Client) error {
			d, err := c.Lookup(context.Background(), wire, benchutil.Context, "tls1.3", "sha256")
			if err == nil {
				clear(d.IPSKX)
			}
			return err
		},
	}
	for _, op := range []string{"derive", "lookup"} {
		for _, n := range []int{1, 8} {
			b.Run(op+"/clients="+strconv.Itoa(n), func(b *testing.B) { benchutil.Clients(b, sock, n, ops[op]) })
		}
	}
}
