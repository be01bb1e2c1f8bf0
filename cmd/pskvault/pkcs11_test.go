//go:build cgo

package main

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pskvault/pskvault/backends/pkcs11"
	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
	"github.com/pskvault/pskvault/importer"
)

// TestPKCS11EndToEnd drives the real binary on a throwaway SoftHSM2 token:
// probe, import (both EPSK hashes), create, wrapped import under a
// wrapping key on the token; derivations match the importer byte for byte
// before and after a daemon restart; no EPSK or PRK byte reaches the state
// dir, the token dir, the logs or the socket responses.
func TestPKCS11EndToEnd(t *testing.T) {
	tok := pkcs11test.Require(t, "pskvault-e2e") // sets SOFTHSM2_CONF for the binary
	uri := tok.URI()
	var responses bytes.Buffer

	n := &node{t: t, dir: t.TempDir(), socket: filepath.Join(t.TempDir(), "s")}
	out, code := n.run(nil, "pkcs11", "probe", uri)
	if code != 0 || !strings.Contains(out, "usable for sha256 and sha384") {
		t.Fatalf("pkcs11 probe: exit %d: %s", code, out)
	}
	jout, jerr, code := runSplit(t, nil, "pkcs11", "probe", "--json", uri)
	var rep pkcs11.Report
	if decodeStrict(t, "pkcs11 probe", jout, &rep); code != 0 || !rep.Usable {
		t.Fatalf("pkcs11 probe --json: exit %d, %+v: %s", code, rep, jerr)
	}
	out, code = n.run(nil, "pkcs11", "probe", "pkcs11:token=pskvault-e2e?module-path="+tok.Module+"&pin-value=1234")
	if code == 0 || !strings.Contains(out, "pin-value is refused") {
		t.Fatalf("probe with pin-value: exit %d: %s", code, out)
	}

	// The wrapping key: made on the provisioning side, placed on the token.
	kek := testKey(32)
	for i := range kek {
		kek[i] ^= 0xa5
	}
	kekFile := writeKey(t, kek)
	jout, jerr, code = runSplit(t, nil, "pkcs11", "import-wrapping-key", "--backend", uri, "--label", "wk-1", "--key-file", kekFile, "--json")
	var wk wrappingKeyJSON
	if decodeStrict(t, "pkcs11 import-wrapping-key", jout, &wk); code != 0 || wk.Label != "wk-1" {
		t.Fatalf("import-wrapping-key --json: exit %d, %+v: %s", code, wk, jerr)
	}
	if strings.Contains(jout, hex.EncodeToString(kek)) {
		t.Fatal("import-wrapping-key --json: the wrapping key is in the JSON")
	}

	a := newNode(t, "node-a", uri)
	a.start()

	var psks []provisioned
	for _, c := range []struct {
		identity string
		hash     importer.Hash
		n        int
	}{
		{"hsm-edge-256", importer.SHA256, 32},
		{"hsm-edge-384", importer.SHA384, 48},
	} {
		epsk := testKey(c.n)
		epsk[0] ^= byte(c.n)
		psks = append(psks, importPSK(t, a, &responses, provisioned{c.identity, c.hash, epsk}, "--key-file", writeKey(t, epsk)))
	}

	madeKey := createPSK(t, a, "hsm-made", &responses)
	psks = append(psks, provisioned{"hsm-made", importer.SHA256, madeKey})

	// Wrapped provisioning for both hashes.
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		epsk := testKey(32)
		for i := range epsk {
			epsk[i] ^= 0x3c + byte(h)
		}
		blob := filepath.Join(t.TempDir(), "key.blob")
		if out, code := a.run(nil, "wrap", "--pkcs11-kek", kekFile, "--hash", h.String(), "--key-file", writeKey(t, epsk), "--out", blob); code != 0 {
			t.Fatalf("wrap: exit %d: %s", code, out)
		}
		psks = append(psks, importPSK(t, a, &responses, provisioned{"hsm-wrapped-" + h.String(), h, epsk},
			"--wrapped", blob, "--wrapped-key-bits", "256", "--param", "wrapping-key=wk-1"))
	}
	// A blob under another key is refused with a clear error.
	other := writeKey(t, testKey(32))
	blob := filepath.Join(t.TempDir(), "other.blob")
	if out, code := a.run(nil, "wrap", "--pkcs11-kek", other, "--key-file", writeKey(t, testKey(32)), "--out", blob); code != 0 {
		t.Fatalf("wrap: exit %d: %s", code, out)
	}
	out, code = a.run(nil, "psk", "import", "--identity", "hsm-bad-blob", "--client", "node-a", "--server", "node-b", "--wrapped", blob, "--param", "wrapping-key=wk-1")
	if code == 0 || !strings.Contains(out, "does not unwrap") {
		t.Errorf("blob under another wrapping key: exit %d: %s", code, out)
	}

	derivations := func(t *testing.T, stage string) {
		t.Helper()
		checkDerivations(t, a, psks, stage, &responses)
	}
	derivations(t, "first run")
	a.stop()
	a.start()
	derivations(t, "after daemon restart")
	a.stop()

	secrets := map[string][]byte{}
	for _, p := range psks {
		prk, _ := importer.Extract(p.hash, p.epsk)
		secrets[p.identity+" EPSK"] = p.epsk
		secrets[p.identity+" PRK"] = prk
		secrets[p.identity+" EPSK hex"] = []byte(hex.EncodeToString(p.epsk))
		secrets[p.identity+" PRK hex"] = []byte(hex.EncodeToString(prk))
	}
	secrets["wrapping key"] = kek
	// The token directory too: SoftHSM2 encrypts private objects under a
	// key derived from the user PIN.
	assertNowhere(t, secrets, map[string][]byte{"daemon log": a.log.Bytes(), "responses": responses.Bytes()}, a.dir, filepath.Join(tok.Dir, "tokens"))
	if pin := tok.PIN(); strings.Contains(a.log.String(), pin) || strings.Contains(responses.String(), pin) {
		t.Error("the PIN appears in the daemon log or a response")
	}
}

// TestPKCS11WrongPIN: a daemon on a token whose PIN is wrong fails once
// with a clear error and leaves the token unlocked.
func TestPKCS11WrongPIN(t *testing.T) {
	tok := pkcs11test.Require(t, "pskvault-e2e-pin")
	wrong := filepath.Join(t.TempDir(), "wrong.pin")
	os.WriteFile(wrong, []byte("0000\n"), 0o600)
	uri := "pkcs11:token=" + tok.Label + "?module-path=" + tok.Module + "&pin-source=file:" + wrong
	n := &node{t: t, dir: filepath.Join(t.TempDir(), "state"), socket: filepath.Join(t.TempDir(), "s")}
	out, code := n.run(nil, "init", "--node-id", "n", "--backend", uri)
	if code == 0 || !strings.Contains(out, "refused the PIN") || strings.Contains(out, "0000") {
		t.Fatalf("init with a wrong PIN: exit %d: %s", code, out)
	}
	out, code = n.run(nil, "pkcs11", "probe", tok.URI())
	if code != 0 || strings.Contains(out, "PIN_LOCKED") || strings.Contains(out, "FINAL_TRY") {
		t.Fatalf("token after a wrong PIN: exit %d: %s", code, out)
	}
}

// BenchmarkPKCS11DeriveDaemon is one derive through the real daemon (its own
// process) on a SoftHSM2 token, single client, beside the soft backend in
// the same run.
func BenchmarkPKCS11DeriveDaemon(b *testing.B) {
	tok := pkcs11test.Require(b, "pskvault-bench") // sets SOFTHSM2_CONF for the daemon
	b.Run("pkcs11", func(b *testing.B) { benchDaemonDerive(b, tok.URI()) })
	b.Run("soft", func(b *testing.B) { benchDaemonDerive(b, "soft") })
}

// TestWrapKEKFromStdinRefused: '--pkcs11-kek -' is a clear error, not a
// nil-pointer panic (standard input may already carry the key being wrapped).
func TestWrapKEKFromStdinRefused(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command(binary, "wrap", "--pkcs11-kek", "-", "--key-file", writeKey(t, testKey(32)), "--out", filepath.Join(dir, "blob")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not standard input") || strings.Contains(string(out), "panic") {
		t.Fatalf("wrap --pkcs11-kek -: err %v, output:\n%s", err, out)
	}
}
