//go:build cgo

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
	// One connection per call, closed after it: the tests poll the daemon
	// hundreds of times, and kept-alive connections left behind would
	// count against its connection cap.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", n.socket)
	}}, Timeout: 20 * time.Second}
	req, _ := http.NewRequest(method, "http://pskvault"+path, rd)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	r, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	resp, _ := io.ReadAll(r.Body)
	status := r.StatusCode
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
	back := time.Now()
	deadline := back.Add(20 * time.Second)
	for {
		status, code := deriveStatus(t, a, "away-2")
		if status == 200 {
			t.Logf("first successful derive %v after the token directory came back", time.Since(back).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("derive after the token came back: still %d %s after 20 s (no recovery without restart)", status, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := tokenKeyIDs(t, tok); len(got) != len(keysBefore) {
		t.Fatalf("the token holds %d keys after the failed delete, had %d", len(got), len(keysBefore))
	}
	checkDerivations(t, a, psks[1:], "after the token came back", &responses)
	// The PSK whose delete failed is marked: refused, and reported.
	if status, code := deriveStatus(t, a, "away-1"); status != 403 || code != "revoked" {
		t.Fatalf("derive of the PSK whose delete is pending: %d %s, want 403 revoked", status, code)
	}
	if out, code := a.run(nil, "check"); code != 1 || !strings.Contains(out, "delete-pending") {
		t.Fatalf("check with a delete pending: exit %d: %s", code, out)
	}
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

// listIdentities returns the identities of n's PSK records.
func listIdentities(t *testing.T, n *node) map[string]bool {
	t.Helper()
	out, code := n.run(nil, "psk", "list", "--json")
	if code != 0 {
		t.Fatalf("psk list: exit %d: %s", code, out)
	}
	var l struct {
		PSKs []struct {
			Identity string `json:"identity"`
		} `json:"psks"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("psk list --json: %v", err)
	}
	ids := map[string]bool{}
	for _, p := range l.PSKs {
		ids[p.Identity] = true
	}
	return ids
}

// TestPKCS11KillLoop kills the real daemon with SIGKILL again and again
// while clients import and delete PSKs, restarts it each time, and then
// compares the token's keys (listed by pkcs11-tool) with the records: one
// key per record plus the vault's auxiliary key, no more (a key created
// but never recorded) and no fewer (a record whose key was destroyed);
// every acknowledged import not since deleted is there, every
// acknowledged delete is gone, and `check` finds nothing amiss.
func TestPKCS11KillLoop(t *testing.T) {
	tok := pkcs11test.Require(t, "pskvault-kill")
	a := newNode(t, "node-a", tok.URI())
	const kills = 25
	var mu sync.Mutex
	acked := map[string]bool{} // identity -> kept (import acknowledged, no delete acknowledged)
	seq := 0
	for k := 0; k < kills; k++ {
		a.start()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					seq++
					id := fmt.Sprintf("kill-%d", seq)
					var victim string
					for v, kept := range acked {
						if kept && seq%2 == 0 {
							victim = v
							acked[v] = false // neither kept nor gone until acknowledged
							break
						}
					}
					mu.Unlock()
					if victim != "" {
						if _, code := a.run(nil, "psk", "delete", "--identity", victim); code == 0 {
							mu.Lock()
							delete(acked, victim)
							mu.Unlock()
						}
						continue
					}
					key := make([]byte, 32)
					rand.Read(key)
					if _, code := a.run(nil, "psk", "import", "--identity", id, "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, key)); code == 0 {
						mu.Lock()
						acked[id] = true
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(400+mrand.IntN(800)) * time.Millisecond)
		a.cmd.Process.Kill()
		a.cmd.Wait()
		a.cmd = nil
		close(stop)
		wg.Wait()
	}

	a.start()
	records := listIdentities(t, a)
	keys := tokenKeyIDs(t, tok)
	if len(keys) != len(records)+1 {
		t.Errorf("after %d kills the token holds %d keys for %d records (+1 auxiliary key): %d key(s) too many", kills, len(keys), len(records), len(keys)-len(records)-1)
	}
	mu.Lock()
	for id, kept := range acked {
		if kept && !records[id] {
			t.Errorf("acknowledged import %s is lost", id)
		}
	}
	mu.Unlock()
	if t.Failed() {
		t.FailNow()
	}
	for id := range records {
		if status, code := deriveStatus(t, a, id); status != 200 {
			t.Errorf("derive %s after the kills: %d %s", id, status, code)
		}
	}
	out, code := a.run(nil, "check", "--json")
	var rep struct {
		Errors int `json:"consistency_errors"`
	}
	if json.Unmarshal([]byte(out), &rep); rep.Errors != 0 {
		t.Errorf("check after the kills: exit %d, %d record/backend disagreement(s): %s", code, rep.Errors, out)
	}
	t.Logf("%d kills, %d records, %d token keys", kills, len(records), len(keys))
}

// TestPKCS11KeyMissing: a key destroyed behind the vault's back while the
// daemon was down is found by the reconciliation at start: the record is
// marked, `check` reports it and exits 1, derive answers 410 key_missing.
func TestPKCS11KeyMissing(t *testing.T) {
	tok := pkcs11test.Require(t, "pskvault-missing")
	a := newNode(t, "node-a", tok.URI())
	a.start()
	var responses bytes.Buffer
	for _, id := range []string{"kept", "lost"} {
		epsk := testKey(32)
		epsk[1] ^= id[0]
		importPSK(t, a, &responses, provisioned{id, importer.SHA256, epsk}, "--key-file", writeKey(t, epsk))
	}
	if out, code := a.run(nil, "check"); strings.Contains(out, "key-missing") {
		t.Fatalf("check before: exit %d: %s", code, out)
	}
	a.stop()
	deleteTokenKey(t, tok, "lost")
	a.start()
	out, code := a.run(nil, "check")
	if code != 1 || !strings.Contains(out, "key-missing") || !strings.Contains(out, hex.EncodeToString([]byte("lost"))) {
		t.Fatalf("check after the key was destroyed behind the vault's back: exit %d: %s", code, out)
	}
	if strings.Contains(out, hex.EncodeToString([]byte("kept"))+": the backend no longer") {
		t.Fatalf("check reports the kept PSK's key missing: %s", out)
	}
	if status, code := deriveStatus(t, a, "lost"); status != 410 || code != "key_missing" {
		t.Fatalf("derive of the PSK whose key is gone: %d %s, want 410 key_missing", status, code)
	}
	if status, code := deriveStatus(t, a, "kept"); status != 200 {
		t.Fatalf("derive of the kept PSK: %d %s", status, code)
	}
}

// TestPKCS11ChangedPIN: the token's PIN is changed while the daemon runs
// and the daemon has to log in again (the token directory moved away and
// back). With the old PIN still in its PIN file the daemon answers 503
// backend_unavailable (never 500, and it does not keep presenting the
// refused PIN: see TestChangedPINFile); once the PIN file holds the new
// PIN, derives work again without a restart.
func TestPKCS11ChangedPIN(t *testing.T) {
	tok := pkcs11test.Require(t, "pskvault-pin")
	a := newNode(t, "node-a", tok.URI())
	a.start()
	var responses bytes.Buffer
	epsk := testKey(32)
	epsk[2] ^= 0x5a
	psks := []provisioned{importPSK(t, a, &responses, provisioned{"pin-changed", importer.SHA256, epsk}, "--key-file", writeKey(t, epsk))}

	oldPIN, newPIN := tok.PIN(), "new-pin-"+hex.EncodeToString(epsk[:4])
	cmd := exec.Command("pkcs11-tool", "--module", tok.Module, "--token-label", tok.Label, "--login", "--pin", "env:PSKVAULT_OLD_PIN", "--change-pin", "--new-pin", "env:PSKVAULT_NEW_PIN")
	cmd.Env = append(os.Environ(), tok.Env(), "PSKVAULT_OLD_PIN="+oldPIN, "PSKVAULT_NEW_PIN="+newPIN)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pkcs11-tool --change-pin: %v: %s", err, out)
	}
	// Make the daemon log in again: the token goes away and comes back.
	dir := filepath.Join(tok.Dir, "tokens")
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if status, code := deriveStatus(t, a, "pin-changed"); status != 503 || code != "backend_unavailable" {
		t.Fatalf("derive with the token away: %d %s", status, code)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		time.Sleep(250 * time.Millisecond) // past the back-off: each may try to log in
		if status, code := deriveStatus(t, a, "pin-changed"); status != 503 || code != "backend_unavailable" {
			t.Fatalf("derive #%d with the old PIN in the PIN file: %d %s, want 503 backend_unavailable", i, status, code)
		}
	}
	if err := os.WriteFile(tok.PINFile, []byte(newPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, code := deriveStatus(t, a, "pin-changed")
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("derive after the PIN file was updated: still %d %s after 20 s (needs a restart?)", status, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkDerivations(t, a, psks, "after the PIN change", &responses)
	if strings.Contains(a.log.String(), oldPIN) || strings.Contains(a.log.String(), newPIN) || strings.Contains(responses.String(), newPIN) {
		t.Error("a PIN appears in the daemon log or a response")
	}
}
