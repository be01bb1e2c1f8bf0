package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/internal/syncbuf"
)

// serveWith starts the daemon like start, with serve flags, and returns its
// output, readable while it runs.
func (n *node) serveWith(args ...string) *syncbuf.Buffer {
	n.t.Helper()
	out := &syncbuf.Buffer{}
	n.cmd = exec.Command(binary, append([]string{"--state-dir", n.dir, "--socket", n.socket, "serve"}, args...)...)
	n.cmd.Stdout, n.cmd.Stderr = out, out
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(n.stop)
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", n.socket); err == nil {
			c.Close()
			return out
		}
		if i > 200 {
			n.t.Fatalf("daemon did not start: %s", out)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// reload sends SIGHUP and waits for the daemon's reload line (the k-th).
func (n *node) reload(out *syncbuf.Buffer, k int) {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		n.t.Fatal(err)
	}
	for i := 0; strings.Count(out.String(), "msg=reload result=") < k; i++ {
		if i > 400 {
			n.t.Fatalf("no reload line after SIGHUP:\n%s", out)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// runAs runs the CLI against this node as another user.
func (n *node) runAs(cred *syscall.Credential, args ...string) (string, int) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"--state-dir", n.dir, "--socket", n.socket}, args...)...)
	cmd.Env = append(os.Environ(), "HOME=/nonexistent")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		n.t.Fatalf("run pskvault as uid %d: %v", cred.Uid, err)
	}
	return string(out), 0
}

func auditFile(t *testing.T, path string) []api.AuditEntry {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []api.AuditEntry
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		var e api.AuditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s: a line is not JSON: %v: %q", path, err, sc.Text())
		}
		out = append(out, e)
	}
	return out
}

func reloads(es []api.AuditEntry) (results []string) {
	for _, e := range es {
		if e.Op == "reload" {
			if e.Socket != "signal" || e.UID != nil {
				panic("reload audit line not from the daemon itself")
			}
			results = append(results, e.Result)
		}
	}
	return results
}

func writeConfig(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReloadAccess: SIGHUP applies new access lists to the running daemon;
// a broken file leaves the old ones in force, with its line in the log.
func TestReloadAccess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to call the daemon as other uids")
	}
	userA := &syscall.Credential{Uid: 65533, Gid: 65534}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	a := newNode(t, "node-a", "soft")
	root := filepath.Dir(a.dir)
	// Other uids run the binary and reach the data socket.
	for _, d := range []string{filepath.Dir(binary), root, filepath.Dir(root)} {
		os.Chmod(d, 0o755)
	}
	data := defaultDataSocket(a.socket)
	cfg := filepath.Join(root, "pskvault.toml")
	writeConfig(t, cfg,
		`node_id = "node-a"`,
		`[[psk]]`,
		`identity = "web-1"`,
		`client = ["user:65533"]`)
	out := a.serveWith("--config", cfg)
	keyFile := filepath.Join(t.TempDir(), "epsk.hex")
	if o, code := a.run(nil, "psk", "create", "--identity", "web-1", "--client", "node-a", "--server", "node-b", "--format", "hex", "--out", keyFile); code != 0 {
		t.Fatal(o)
	}
	var outputs []string
	derive := func(cred *syscall.Credential) (string, int) {
		o, code := a.runAs(cred, "--data-socket", data, "derive", "--identity", "web-1", "--json")
		outputs = append(outputs, o)
		return o, code
	}
	if o, code := derive(userA); code != 0 {
		t.Fatalf("uid 65533 (in the file) derive: %s", o)
	}
	if o, code := derive(nobody); code == 0 || !strings.Contains(o, "no such PSK") {
		t.Fatalf("uid 65534 derived before the reload: exit %d: %s", code, o)
	}

	writeConfig(t, cfg,
		`node_id = "node-a"`,
		`[[psk]]`,
		`identity = "web-1"`,
		`client = ["user:65533", "user:65534"]`)
	a.reload(out, 1)
	if o, code := derive(nobody); code != 0 {
		t.Fatalf("uid 65534 after the reload granting it: exit %d: %s\n%s", code, o, out)
	}

	// Broken: would take uid 65534 out again, but line 3 is wrong, so
	// nothing of it applies.
	writeConfig(t, cfg,
		`node_id = "node-a"`,
		``,
		`acess_log = "/tmp/x"`,
		`[[psk]]`,
		`identity = "web-1"`,
		`client = ["user:65533"]`)
	a.reload(out, 2)
	if !strings.Contains(out.String(), cfg+`:3: unknown key (not repeated here; known: node_id,`) {
		t.Fatalf("the log does not name the bad line:\n%s", out)
	}
	if o, code := derive(nobody); code != 0 {
		t.Fatalf("a broken file changed the rules: uid 65534 refused: %s", o)
	}
	if o, code := derive(userA); code != 0 {
		t.Fatalf("daemon stopped serving after a broken reload: %s", o)
	}
	if got := reloads(auditFile(t, filepath.Join(a.dir, "audit.log"))); strings.Join(got, ",") != "ok,failed" {
		t.Fatalf("reload audit lines: %v", got)
	}

	a.stop()
	epsk, _ := os.ReadFile(keyFile)
	audit, _ := os.ReadFile(filepath.Join(a.dir, "audit.log"))
	for i, s := range append(outputs, out.String(), string(audit)) {
		if strings.Contains(strings.ToLower(s), strings.TrimSpace(string(epsk))) {
			t.Errorf("output %d holds the EPSK", i)
		}
	}
}

// TestReloadAuditLog: logrotate renames the audit log and sends SIGHUP;
// later lines go to a new 0600 file at the old path and the renamed one
// keeps its lines, while clients keep talking to the daemon: no line lost or
// torn. Settings fixed at start are reported as needing a restart (those
// the command line sets are the command line's), and a broken or missing
// file still gets the audit log reopened.
func TestReloadAuditLog(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	cfg := filepath.Join(t.TempDir(), "pskvault.toml")
	writeConfig(t, cfg, `max_conns = 64`, `max_conns_per_uid = 16`)
	out := a.serveWith("--config", cfg, "--max-conns-per-uid", "8")
	if o, code := a.run(nil, "psk", "create", "--identity", "r", "--client", "node-a", "--server", "node-b", "--format", "hex", "--out", filepath.Join(t.TempDir(), "k")); code != 0 {
		t.Fatal(o)
	}
	logPath := filepath.Join(a.dir, "audit.log")
	before, err := os.ReadFile(logPath)
	if err != nil || !bytes.Contains(before, []byte(`"op":"create"`)) {
		t.Fatalf("audit log before rotation: %v %s", err, before)
	}

	// Clients talk to the daemon through the rotation.
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", a.socket)
	}}, Timeout: 20 * time.Second}
	const clients, each = 4, 100
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	rotated := make(chan struct{})
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if i == each/2 {
					<-rotated
				}
				resp, err := c.Get("http://pskvault/v1/status")
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, cfg, `max_conns = 32`, `max_conns_per_uid = 4`)
	a.reload(out, 1)
	close(rotated)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	old, cur := auditFile(t, logPath+".1"), auditFile(t, logPath)
	rotatedRaw, _ := os.ReadFile(logPath + ".1")
	if !bytes.HasPrefix(rotatedRaw, before) {
		t.Fatal("the renamed audit log lost or changed its earlier lines")
	}
	st, err := os.Stat(logPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("new audit log: %v, mode %v", err, st.Mode())
	}
	var status int
	for _, e := range append(old, cur...) {
		if e.Op == "status" {
			status++
		}
	}
	if status != clients*each {
		t.Fatalf("%d status lines in the two files, want %d", status, clients*each)
	}
	if got := reloads(cur); len(got) != 1 || got[0] != "ok" || len(reloads(old)) != 0 {
		t.Fatalf("the reload line is not in the new file alone: %v / %v", reloads(old), got)
	}
	for _, e := range cur {
		if e.Op == "reload" && e.Reason != "needs a restart: max_conns" {
			t.Fatalf("reload reason %q, want max_conns (max_conns_per_uid is the command line's)", e.Reason)
		}
	}
	if !strings.Contains(out.String(), "needs a restart to take effect\" setting=max_conns running=64 configured=32") ||
		strings.Contains(out.String(), "setting=max_conns_per_uid") {
		t.Fatalf("restart-only settings not reported as such:\n%s", out)
	}

	// A missing file fails the reload, but logrotate's reopen still happens.
	if err := os.Rename(logPath, logPath+".2"); err != nil {
		t.Fatal(err)
	}
	os.Remove(cfg)
	a.reload(out, 2)
	if !strings.Contains(out.String(), "msg=reload result=failed") || !strings.Contains(out.String(), "no such file") {
		t.Fatalf("missing configuration file not reported:\n%s", out)
	}
	if got := reloads(auditFile(t, logPath)); len(got) != 1 || got[0] != "failed" {
		t.Fatalf("after a failed reload the audit log was not reopened: %v", got)
	}
	if o, code := a.run(nil, "psk", "list"); code != 0 || !strings.Contains(o, "active") {
		t.Fatalf("daemon not serving after a failed reload: %s", o)
	}
}
