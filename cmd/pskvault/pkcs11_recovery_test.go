//go:build cgo

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
	"github.com/pskvault/pskvault/importer"
)

// tokenKeyIDs lists the CKA_IDs (hex) of the secret keys on tok, read by
// pkcs11-tool in its own process: a witness independent of the daemon.
func tokenKeyIDs(t *testing.T, tok *pkcs11test.SoftHSM) []string {
	t.Helper()
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		t.Fatalf("pkcs11-tool (opensc) is needed to count the token's objects: %v", err)
	}
	cmd := exec.Command("pkcs11-tool", "--module", tok.Module, "--token-label", tok.Label, "--login", "--pin", "env:PSKVAULT_TEST_PIN", "--list-objects", "--type", "secrkey")
	cmd.Env = append(os.Environ(), tok.Env(), "PSKVAULT_TEST_PIN="+tok.PIN())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pkcs11-tool --list-objects: %v: %s", err, stderr.String())
	}
	var ids []string
	for _, line := range strings.Split(string(out), "\n") {
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), "ID:"); ok {
			ids = append(ids, strings.TrimSpace(id))
		}
	}
	return ids
}

// apiCall sends a JSON request to n's daemon and returns the status and the
// error code of a non-2xx answer.
func apiCall(t *testing.T, n *node, method, path string, body any) (int, string) {
	t.Helper()
	var rd *bytes.Reader
	ctype := ""
	if body != nil {
		b, _ := json.Marshal(body)
		rd, ctype = bytes.NewReader(b), "application/json"
	} else {
		rd = bytes.NewReader(nil)
	}
	status, resp := n.http(method, path, ctype, rd)
	var e struct {
		Code string `json:"code"`
	}
	json.Unmarshal(resp, &e)
	return status, e.Code
}

func deriveStatus(t *testing.T, n *node, identity string) (int, string) {
	return apiCall(t, n, "POST", "/v1/derive", map[string]string{"identity": identity, "protocol": "tls1.3", "kdf": "sha256"})
}

// TestPKCS11TokenAway runs the real daemon on a SoftHSM2 token whose
// directory is moved away and back while it serves: derives answer 503
// backend_unavailable, a DELETE does not answer 204 and neither loses the
// record nor leaves it answering while the key stays; once the directory is
// back, derives work again without a restart and the delete can finish.
func TestPKCS11TokenAway(t *testing.T) {
	tok := pkcs11test.Require(t, "pskvault-away")
	a := newNode(t, "node-a", tok.URI())
	a.start()
	var responses bytes.Buffer
	var psks []provisioned
	for _, id := range []string{"away-1", "away-2"} {
		epsk := testKey(32)
		epsk[0] ^= id[len(id)-1]
		psks = append(psks, importPSK(t, a, &responses, provisioned{id, importer.SHA256, epsk}, "--key-file", writeKey(t, epsk)))
	}
	checkDerivations(t, a, psks, "before", &responses)
	keysBefore := tokenKeyIDs(t, tok)

	dir := filepath.Join(tok.Dir, "tokens")
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	moved := true
	t.Cleanup(func() {
		if moved {
			os.Rename(dir+".away", dir)
		}
	})
	for i := 0; i < 3; i++ {
		if status, code := deriveStatus(t, a, "away-2"); status != 503 || code != "backend_unavailable" {
			t.Fatalf("derive #%d with the token away: %d %s, want 503 backend_unavailable", i, status, code)
		}
	}
	away1 := map[string]string{"identity_hex": hex.EncodeToString([]byte("away-1"))}
	if status, code := apiCall(t, a, "POST", "/v1/psks/delete", away1); status != 503 || code != "backend_unavailable" {
		t.Fatalf("DELETE with the token away: %d %s, want 503 backend_unavailable", status, code)
	}
	if status, _ := apiCall(t, a, "POST", "/v1/psks/show", away1); status != 200 {
		t.Fatalf("the record of the PSK whose delete failed: GET answers %d, want 200 (record kept)", status)
	}

	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	moved = false
	if got := tokenKeyIDs(t, tok); len(got) != len(keysBefore) {
		t.Fatalf("the token holds %d keys after the failed delete, had %d", len(got), len(keysBefore))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, code := deriveStatus(t, a, "away-2")
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("derive after the token came back: still %d %s after 20 s (no recovery without restart)", status, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkDerivations(t, a, psks[1:], "after the token came back", &responses)
	if status, code := apiCall(t, a, "POST", "/v1/psks/delete", away1); status != 204 {
		t.Fatalf("DELETE after the token came back: %d %s, want 204", status, code)
	}
	if got := tokenKeyIDs(t, tok); len(got) != len(keysBefore)-1 {
		t.Fatalf("the token holds %d keys after the delete, want %d", len(got), len(keysBefore)-1)
	}

	// A key destroyed behind the daemon's back, with the token present:
	// 410 key_missing, not 500 internal.
	deleteTokenKey(t, tok, "away-2")
	if status, code := deriveStatus(t, a, "away-2"); status != 410 || code != "key_missing" {
		t.Fatalf("derive of a PSK whose key was destroyed behind the daemon's back: %d %s, want 410 key_missing", status, code)
	}
}

// deleteTokenKey destroys the key of PSK identity on tok behind the
// daemon's back (pkcs11-tool, by the label the vault gives it).
func deleteTokenKey(t *testing.T, tok *pkcs11test.SoftHSM, identity string) {
	t.Helper()
	sum := sha256.Sum256([]byte(identity))
	cmd := exec.Command("pkcs11-tool", "--module", tok.Module, "--token-label", tok.Label, "--login", "--pin", "env:PSKVAULT_TEST_PIN",
		"--delete-object", "--type", "secrkey", "--label", fmt.Sprintf("pskvault-%x", sum[:8]))
	cmd.Env = append(os.Environ(), tok.Env(), "PSKVAULT_TEST_PIN="+tok.PIN())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pkcs11-tool --delete-object: %v: %s", err, out)
	}
}
