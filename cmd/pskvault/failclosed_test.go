package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
)

// smallFS mounts a tmpfs of size bytes (a real file system that fills up)
// and returns its mount point; it is unmounted when the test ends, whatever
// happened (lazily when something still holds it open).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small file system")
	}
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			exec.Command("umount", "-l", dir).Run()
			t.Logf("umount %s: %v: %s (unmounted lazily)", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the file system is full, and returns its
// path (remove it to free the space).
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			break
		}
	}
	// Whatever is left is smaller than a page: take it too.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
	return path
}

// newNodeIn is newNode with the state directory at stateDir.
func newNodeIn(t *testing.T, id, backend, stateDir string) *node {
	t.Helper()
	n := &node{t: t, dir: stateDir, socket: filepath.Join(t.TempDir(), "run", "pskvault.sock")}
	if out, code := n.run(nil, "init", "--node-id", id, "--backend", backend); code != 0 {
		t.Fatalf("init: exit %d: %s", code, out)
	}
	return n
}

// rawHTTP sends one request on a fresh connection to sock and returns the
// status and body.
func rawHTTP(t *testing.T, sock, method, path, ctype string, body string) (int, []byte) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}, Timeout: 20 * time.Second}
	req, _ := http.NewRequest(method, "http://pskvault"+path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func errCode(b []byte) string {
	var e api.Error
	json.Unmarshal(b, &e)
	return e.Code
}

const deriveBody = `{"identity":"svc","protocol":"tls1.3","kdf":"sha256"}`

// TestFullDiskStart (issue 11 item 8): a daemon whose state directory has
// no room for a second copy of vault.db starts anyway, with a warning,
// serves derivations, answers changes 507 insufficient_storage without
// naming a file, and compacts once space returns.
func TestFullDiskStart(t *testing.T) {
	fs := smallFS(t, "2m")
	n := newNodeIn(t, "node-a", "soft", filepath.Join(fs, "state"))
	audit := filepath.Join(t.TempDir(), "audit.log") // item 5 is tested on its own
	n.serveWith("--audit-log", audit)
	if out, code := n.run(nil, "psk", "create", "--identity", "svc", "--client", "node-a", "--server", "node-b", "--out", filepath.Join(t.TempDir(), "k.hex")); code != 0 {
		t.Fatal(out)
	}
	n.stop()

	filler := fill(t, fs)
	out := n.serveWith("--audit-log", audit)
	if !strings.Contains(out.String(), "could not be rewritten at start") {
		t.Errorf("no start-up warning about the pending compaction:\n%s", out)
	}
	data := defaultDataSocket(n.socket)
	if code, b := rawHTTP(t, data, "POST", "/v1/derive", "application/json", deriveBody); code != 200 {
		t.Fatalf("derive on a full disk: %d %s", code, b)
	}
	code, b := rawHTTP(t, n.socket, "POST", "/v1/psks/create?identity=more&client=node-a&server=node-b", "", "")
	if code != http.StatusInsufficientStorage || errCode(b) != api.CodeNoSpace {
		t.Fatalf("create on a full disk: got %d %s, want 507 %s", code, b, api.CodeNoSpace)
	}
	if strings.Contains(string(b), "vault.db") || strings.Contains(string(b), fs) {
		t.Errorf("the answer names an internal path: %s", b)
	}
	// The change was not made.
	if code, _ := rawHTTP(t, n.socket, "GET", "/v1/psks/"+hexString("more"), "", ""); code != 404 {
		t.Errorf("the refused create left a record: show answered %d", code)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "pending compaction is done") {
		if time.Now().After(deadline) {
			t.Fatalf("no compaction after space returned:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, b := rawHTTP(t, n.socket, "POST", "/v1/psks/create?identity=more&client=node-a&server=node-b", "", ""); code != 201 {
		t.Fatalf("create after space returned: %d %s", code, b)
	}
	if code, b := rawHTTP(t, data, "POST", "/v1/derive", "application/json", deriveBody); code != 200 {
		t.Fatalf("derive after space returned: %d %s", code, b)
	}
}

func hexString(s string) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte(digits[s[i]>>4])
		b.WriteByte(digits[s[i]&15])
	}
	return b.String()
}
