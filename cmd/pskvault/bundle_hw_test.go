package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/internal/swtpmsim"
)

// wrappedBundle makes a PSK on a soft node-a from a known key, writes the
// bundle wrapped for node-b's hardware (wrapArgs) into a directory that
// stands for node-b's host, imports it on b with no other flag, checks both
// derive the same keys, and then searches every file written on node-b's
// host (its state dir, the device's state, the bundle) for the key in clear.
func wrappedBundle(t *testing.T, b *node, deviceDirs []string, wrapArgs ...string) {
	a := newNode(t, "node-a", "soft")
	a.start()
	epsk := randKey(t)
	hostB := t.TempDir()
	bundlePath := filepath.Join(hostB, "node-b.bundle")
	args := append([]string{"psk", "create", "--identity", "hw-link", "--client", "node-a", "--server", "node-b", "--node-context",
		"--key-file", writeKey(t, epsk), "--out", bundlePath}, wrapArgs...)
	out, code := a.run(nil, args...)
	if code != 0 {
		t.Fatalf("create wrapped bundle: exit %d: %s", code, out)
	}
	kcvA := kcvOf(t, out)
	raw, err := os.ReadFile(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("key-kind: clear")) {
		t.Fatal("the bundle carries the key in clear")
	}
	var responses bytes.Buffer
	out, code = b.run(nil, "psk", "import", "--bundle", bundlePath)
	if code != 0 {
		t.Fatalf("import of the wrapped bundle: exit %d: %s", code, out)
	}
	responses.WriteString(out)
	if kcvOf(t, out) != kcvA {
		t.Fatal("key check values differ between the two nodes")
	}
	if strings.Contains(out, "still holds the key in clear") {
		t.Error("a wrapped bundle drew the clear-key removal hint")
	}
	// An edited wrapped bundle is refused by the daemon, whose hardware
	// computes the MAC key.
	edited := bytes.Replace(raw, []byte("identity-hex: 68772d6c696e6b"), []byte("identity-hex: 68772d6c696e6c"), 1)
	if out, code := b.run(edited, "psk", "import", "--bundle", "-"); code == 0 || !strings.Contains(out, "bundle authentication failed") {
		t.Errorf("edited wrapped bundle: exit %d: %s", code, out)
	}
	sameKeys(t, a, b, "hw-link", []string{"tls1.3/sha256", "tls1.3/sha384", "dtls1.3/sha256", "dtls1.3/sha384"}, &responses)
	b.stop()
	prk, _ := importer.Extract(importer.SHA256, epsk)
	secrets := map[string][]byte{
		"EPSK": epsk, "PRK": prk,
		"EPSK hex": []byte(hex.EncodeToString(epsk)), "PRK hex": []byte(hex.EncodeToString(prk)),
		"EPSK base64": []byte(base64.StdEncoding.EncodeToString(epsk)), "PRK base64": []byte(base64.StdEncoding.EncodeToString(prk)),
	}
	assertNowhere(t, secrets, map[string][]byte{"node-b's answers": responses.Bytes(), "node-b's daemon log": b.log.Bytes()},
		append([]string{b.dir, hostB}, deviceDirs...)...)
}

// TestBundleTPMWrapped: a bundle wrapped to node-b's TPM storage parent
// imports into swtpm, and nothing on node-b's host holds the key in clear.
func TestBundleTPMWrapped(t *testing.T) {
	sim := swtpmsim.Start(t)
	b := newNode(t, "node-b", sim.URI())
	b.start()
	pub := filepath.Join(t.TempDir(), "node-b.parent.pub")
	if out, code := b.run(nil, "tpm", "parent-pub", "--out", pub); code != 0 {
		t.Fatalf("tpm parent-pub: exit %d: %s", code, out)
	}
	wrappedBundle(t, b, []string{sim.Dir}, "--tpm-parent-pub", pub)
}

// TestBundlePKCS11Wrapped: a bundle wrapped under node-b's token
// key-encryption key imports into SoftHSM2, and nothing on node-b's host
// holds the key in clear.
func TestBundlePKCS11Wrapped(t *testing.T) {
	tok := pkcs11test.Require(t, "pskvault-bundle")
	uri := tok.URI()
	kek := randKey(t)
	kekFile := writeKey(t, kek)
	setup := &node{t: t, dir: t.TempDir(), socket: filepath.Join(t.TempDir(), "s")}
	if out, code := setup.run(nil, "pkcs11", "import-wrapping-key", "--backend", uri, "--label", "wk-b", "--key-file", kekFile); code != 0 {
		t.Fatalf("import-wrapping-key: exit %d: %s", code, out)
	}
	b := newNode(t, "node-b", uri)
	b.start()
	wrappedBundle(t, b, []string{filepath.Join(tok.Dir, "tokens")}, "--pkcs11-kek", kekFile, "--wrapping-key", "wk-b")
}
