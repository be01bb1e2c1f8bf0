// Package pkcs11test makes throwaway SoftHSM2 tokens for tests: a private
// token directory and config, a token initialized by label, and the user
// PIN in a 0600 file, so tests run the same code path as a real HSM.
package pkcs11test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// SoftHSM is one throwaway SoftHSM2 token.
type SoftHSM struct {
	Dir     string // private directory holding config, tokens and PIN file
	Conf    string // SOFTHSM2_CONF value
	Module  string // libsofthsm2.so path
	Label   string // token label
	PINFile string // 0600 file with the user PIN
	SOPIN   string
}

// Module returns the SoftHSM2 PKCS#11 module path, or "" when SoftHSM2 is
// not installed. PSKVAULT_SOFTHSM_MODULE overrides the search.
func Module() string {
	if m := os.Getenv("PSKVAULT_SOFTHSM_MODULE"); m != "" {
		return m
	}
	for _, m := range []string{
		"/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/local/lib/softhsm/libsofthsm2.so",
		"/usr/lib64/pkcs11/libsofthsm2.so",
	} {
		if _, err := os.Stat(m); err == nil {
			return m
		}
	}
	return ""
}

// Available says why SoftHSM2 cannot be used, or nil.
func Available() error {
	if Module() == "" {
		return errors.New("SoftHSM2 module libsofthsm2.so not found (apt-get install softhsm2)")
	}
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		return errors.New("softhsm2-util not found (apt-get install softhsm2)")
	}
	return nil
}

// New creates a token labelled label in a new directory under dir. The
// caller exports Conf as SOFTHSM2_CONF (see Env) before loading the module.
func New(dir, label string) (*SoftHSM, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp(dir, "softhsm-")
	if err != nil {
		return nil, err
	}
	s := &SoftHSM{Dir: d, Module: Module(), Label: label,
		Conf: filepath.Join(d, "softhsm2.conf"), PINFile: filepath.Join(d, "user.pin")}
	if err := os.Mkdir(filepath.Join(d, "tokens"), 0o700); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", filepath.Join(d, "tokens"))
	if err := os.WriteFile(s.Conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	pin := randHex(8)
	s.SOPIN = randHex(8)
	if err := os.WriteFile(s.PINFile, []byte(pin+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := s.AddToken(label, pin); err != nil {
		return nil, err
	}
	return s, nil
}

// AddToken initializes one more token in the same token directory.
func (s *SoftHSM) AddToken(label, pin string) error {
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", s.SOPIN)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+s.Conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("softhsm2-util --init-token: %v: %s", err, out)
	}
	return nil
}

// Env is the environment entry a process using this token needs.
func (s *SoftHSM) Env() string { return "SOFTHSM2_CONF=" + s.Conf }

// URI is the pskvault backend URI for the token.
func (s *SoftHSM) URI() string {
	return "pkcs11:token=" + s.Label + "?module-path=" + s.Module + "&pin-source=file:" + s.PINFile
}

// PIN reads the user PIN back (tests that need a wrong or a raw login).
func (s *SoftHSM) PIN() string {
	b, _ := os.ReadFile(s.PINFile)
	return string(b[:len(b)-1])
}

// Require returns a token for t, or skips t when SoftHSM2 is missing —
// unless PSKVAULT_REQUIRE_SIMULATORS=1 (CI), which makes that a failure.
// It sets SOFTHSM2_CONF for the test.
func Require(t testing.TB, label string) *SoftHSM {
	t.Helper()
	Skip(t)
	s, err := New(t.TempDir(), label)
	if err != nil {
		t.Fatalf("creating SoftHSM2 token: %v", err)
	}
	t.Setenv("SOFTHSM2_CONF", s.Conf)
	return s
}

// Skip skips t (or fails it under PSKVAULT_REQUIRE_SIMULATORS=1) when
// SoftHSM2 is not installed.
func Skip(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
			t.Fatalf("PSKVAULT_REQUIRE_SIMULATORS=1 but %v", err)
		}
		t.Skipf("skipping: %v (set PSKVAULT_REQUIRE_SIMULATORS=1 to make this a failure)", err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
