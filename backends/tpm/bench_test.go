package tpm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/internal/swtpmsim"
	"github.com/pskvault/pskvault/vault"
)

// All benchmarks share one swtpm so their figures compare like with like:
//
//	go test -run '^$' -bench . -benchtime 2s ./backends/tpm/
var (
	benchOnce sync.Once
	benchSim  *swtpmsim.Sim
	benchErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchSim != nil {
		benchSim.Close()
	}
	os.Exit(code)
}

func sharedSim(b *testing.B) *swtpmsim.Sim {
	b.Helper()
	swtpmsim.SkipOrFail(b, swtpmsim.Available())
	benchOnce.Do(func() { benchSim, benchErr = swtpmsim.Shared() })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchSim
}

func benchBackend(b *testing.B) *Backend {
	b.Helper()
	be, err := Open(context.Background(), sharedSim(b).URI())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	return be
}

var benchData = bytes.Repeat([]byte{0x5a}, 84) // the size of one SHA-256 Expand block input

// Raw TPM2_HMAC with password auth on a key that is already loaded: the
// floor any TPM-backed derivation pays.
func BenchmarkRawTPM2HMAC(b *testing.B) {
	be := benchBackend(b)
	key, _ := store(b, be, importer.SHA256, nil)
	k, _ := parseHandle(key.Handle, key.Hash)
	err := be.run(context.Background(), "bench", func() error {
		obj, err := be.load(k)
		if err != nil {
			return err
		}
		cmd := tpm2.Hmac{
			Handle:  tpm2.AuthHandle{Handle: obj.handle, Name: obj.name, Auth: tpm2.PasswordAuth(nil)},
			Buffer:  tpm2.TPM2BMaxBuffer{Buffer: benchData},
			HashAlg: tpm2.TPMAlgSHA256,
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := cmd.Execute(be.link); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// Backend.HMAC on a key the LRU cache holds loaded.
func BenchmarkBackendHMACHot(b *testing.B) {
	be := benchBackend(b)
	key, _ := store(b, be, importer.SHA256, nil)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := be.HMAC(ctx, key, benchData); err != nil {
			b.Fatal(err)
		}
	}
}

// A whole RFC 9258 derivation (SHA-256 EPSK, HKDF_SHA256 target: one Expand
// block) through the backend, hot key.
func BenchmarkDeriveHot(b *testing.B) {
	be := benchBackend(b)
	key, _ := store(b, be, importer.SHA256, nil)
	ctx := context.Background()
	plan, err := importer.NewPlan(importer.SHA256, importer.Identity{External: []byte("client-1"), Context: []byte("ctx"), Protocol: importer.TLS13, KDF: importer.HKDFSHA256})
	if err != nil {
		b.Fatal(err)
	}
	mac := func(d []byte) ([]byte, error) { return be.HMAC(ctx, key, d) }
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := plan.Expand(mac); err != nil {
			b.Fatal(err)
		}
	}
}

// Cold key: each iteration loads the key, runs TPM2_HMAC and flushes it.
func BenchmarkBackendHMACCold(b *testing.B) {
	be := benchBackend(b)
	key, _ := store(b, be, importer.SHA256, nil)
	ctx := context.Background()
	be.DeleteKey(ctx, key) // flush it
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := be.HMAC(ctx, key, benchData); err != nil {
			b.Fatal(err)
		}
		if err := be.DeleteKey(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}

// PCR-bound key, hot: every use starts a policy session and runs PolicyPCR.
func BenchmarkBackendHMACPCRBound(b *testing.B) {
	be := benchBackend(b)
	key, _ := store(b, be, importer.SHA256, map[string]string{"pcrs": "7"})
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := be.HMAC(ctx, key, benchData); err != nil {
			b.Fatal(err)
		}
	}
}

// StoreKey: salted session, TPM2_Create, load and self-test.
func BenchmarkStoreKey(b *testing.B) {
	be := benchBackend(b)
	_, prk := newPRK(b, importer.SHA256)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h, err := be.StoreKey(ctx, vault.StoreRequest{PRK: prk, Hash: importer.SHA256})
		if err != nil {
			b.Fatal(err)
		}
		be.DeleteKey(ctx, vault.KeyRef{Handle: h, Hash: importer.SHA256})
	}
}

// What users do today without pskvault: a shell script running tpm2_load,
// tpm2_hmac and tpm2_flushcontext (tpm2-tools) for every derivation. On a
// raw swtpm (no resource manager) tpm2_load leaves the parent's context
// loaded too, so the script flushes all transient objects (-t).
const shellDerive = `set -e
tpm2_load -Q -C primary.ctx -u key.pub -r key.priv -c key.ctx
tpm2_hmac -c key.ctx -g sha256 data.bin -o out.bin
tpm2_flushcontext -t
`

func BenchmarkShellTPM2Tools(b *testing.B) {
	sim := sharedSim(b)
	for _, tool := range []string{"tpm2_createprimary", "tpm2_import", "tpm2_load", "tpm2_hmac", "tpm2_flushcontext"} {
		if _, err := exec.LookPath(tool); err != nil {
			swtpmsim.SkipOrFail(b, fmt.Errorf("%s not installed (apt-get install tpm2-tools)", tool))
		}
	}
	dir := b.TempDir()
	_, prk := newPRK(b, importer.SHA256)
	os.WriteFile(filepath.Join(dir, "prk.bin"), prk, 0o600)
	os.WriteFile(filepath.Join(dir, "data.bin"), benchData, 0o600)
	os.WriteFile(filepath.Join(dir, "derive.sh"), []byte(shellDerive), 0o600)
	run := func(script string) {
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+sim.TCTI())
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", script, err, out)
		}
	}
	run(`set -e
tpm2_flushcontext -t
tpm2_createprimary -Q -C o -g sha256 -G ecc256:aes128cfb -c primary.ctx
tpm2_flushcontext -t
tpm2_import -Q -C primary.ctx -G hmac -i prk.bin -u key.pub -r key.priv
tpm2_flushcontext -t`)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run("sh derive.sh")
	}
	b.StopTimer()
	out, _ := os.ReadFile(filepath.Join(dir, "out.bin"))
	want, _ := importer.SoftwareMAC(importer.SHA256, prk)(benchData)
	if !bytes.Equal(out, want) {
		b.Fatal("tpm2_hmac result differs from crypto/hmac")
	}
}
