//go:build cgo

package pkcs11

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
)

// token is the one SoftHSM2 token the package's tests share (SoftHSM reads
// SOFTHSM2_CONF once per C_Initialize, and login state is per process).
// Every test closes the backends it opens, so each starts logged out.
var (
	token    *pkcs11test.SoftHSM
	tokenErr error
	tokenDir string
)

func TestMain(m *testing.M) {
	var err error
	tokenDir, err = os.MkdirTemp("", "pskvault-pkcs11-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if tokenErr = pkcs11test.Available(); tokenErr == nil {
		token, tokenErr = pkcs11test.New(tokenDir, "pskvault-test")
		if tokenErr == nil {
			os.Setenv("SOFTHSM2_CONF", token.Conf)
		}
	}
	code := m.Run()
	os.RemoveAll(tokenDir)
	os.Exit(code)
}

// needToken skips (or, under PSKVAULT_REQUIRE_SIMULATORS=1, fails) t when
// there is no SoftHSM2 token.
func needToken(t testing.TB) *pkcs11test.SoftHSM {
	t.Helper()
	pkcs11test.Skip(t)
	if tokenErr != nil {
		t.Fatalf("SoftHSM2 token: %v", tokenErr)
	}
	return token
}

// openToken opens the shared token with extra URI query attributes and
// closes it when t ends.
func openToken(t testing.TB, extra string) *Backend {
	t.Helper()
	tok := needToken(t)
	b, err := Open(context.Background(), tok.URI()+extra)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
