package main

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestConfigWritableByOthers (issue 11 item 3): a configuration file that
// another user can write lets him add an access rule for himself. Here uid
// 65533 does exactly that to a world-writable file and the daemon gets
// SIGHUP: the reload is refused, the rules in force stay, and he derives
// nothing. A file he owns, or one with a world-writable directory above,
// is refused the same way by serve and by config check.
func TestConfigWritableByOthers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as other uids")
	}
	attacker := &syscall.Credential{Uid: 65533, Gid: 65534}
	a := newNode(t, "node-a", "soft")
	root := filepath.Dir(a.dir)
	for _, d := range []string{filepath.Dir(binary), root, filepath.Dir(root)} {
		os.Chmod(d, 0o755)
	}
	cfg := filepath.Join(root, "pskvault.toml")
	writeConfig(t, cfg, `node_id = "node-a"`)
	out := a.serveWith("--config", cfg)
	if o, code := a.run(nil, "psk", "create", "--identity", "web-1", "--client", "node-a", "--server", "node-b", "--out", filepath.Join(t.TempDir(), "k.hex")); code != 0 {
		t.Fatal(o)
	}
	data := defaultDataSocket(a.socket)
	derive := func() (string, int) {
		return a.runAs(attacker, "--data-socket", data, "derive", "--identity", "web-1", "--json")
	}
	if _, code := derive(); code == 0 {
		t.Fatal("uid 65533 derived before any rule for it (output withheld: it holds a key)")
	}

	// The operator's mistake, then the attacker's edit, as the attacker.
	if err := os.Chmod(cfg, 0o666); err != nil {
		t.Fatal(err)
	}
	edit := []string{"-c", `printf '[[psk]]\nidentity = "web-1"\nclient = ["user:65533"]\n' >> "$0"`, cfg}
	if o, code := runCLIAsShell(t, attacker, edit...); code != 0 {
		t.Fatalf("uid 65533 could not append to the world-writable file: %s", o)
	}
	a.reload(out, 1)
	if !strings.Contains(out.String(), "writable by group or others (mode 0666)") {
		t.Errorf("the reload log does not say why the file was refused:\n%s", out)
	}
	if _, code := derive(); code == 0 {
		t.Fatal("uid 65533 derived after adding a rule for itself to a world-writable configuration (output withheld: it holds a key)")
	}
	if got := reloads(auditFile(t, filepath.Join(a.dir, "audit.log"))); strings.Join(got, ",") != "failed" {
		t.Errorf("reload audit lines: %v, want failed", got)
	}
	a.stop()

	// At start and in config check: writable by others, owned by another
	// user, below a directory others can write.
	owned := filepath.Join(root, "owned.toml")
	writeConfig(t, owned, `node_id = "node-a"`)
	os.Chown(owned, 65533, 65534)
	open := filepath.Join(root, "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o777)
	below := filepath.Join(open, "pskvault.toml")
	writeConfig(t, below, `node_id = "node-a"`)
	for file, want := range map[string]string{
		cfg:   "writable by group or others (mode 0666)",
		owned: "belongs to uid 65533",
		below: "open is writable by group or others (mode 0777)",
	} {
		if o, code := a.run(nil, "config", "check", "--config", file); code == 0 || !strings.Contains(o, want) {
			t.Errorf("config check %s: exit %d: %s", filepath.Base(file), code, o)
		}
		if o, code := a.run(nil, "--data-socket", "none", "serve", "--config", file); code == 0 || !strings.Contains(o, want) {
			t.Errorf("serve --config %s: exit %d: %s", filepath.Base(file), code, o)
		}
	}
}

// runCLIAsShell runs sh as cred.
func runCLIAsShell(t *testing.T, cred *syscall.Credential, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("/bin/sh", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// TestConfigKeyFileNotEchoed (issue 11 item 3): a key file given as the
// configuration (the wrong --config) makes config check, serve and a
// SIGHUP reload report FILE:LINE and the problem; the key appears in none
// of their output, nor in the audit log.
func TestConfigKeyFileNotEchoed(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	root := filepath.Dir(a.dir)
	key := hex.EncodeToString(testKey(32))
	keyFile := filepath.Join(root, "key.hex")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var outputs []string
	o, code := a.run(nil, "config", "check", "--config", keyFile)
	outputs = append(outputs, o)
	if code == 0 || !strings.Contains(o, keyFile+":1: want key = value") {
		t.Errorf("config check on a key file: exit %d: %s", code, o)
	}
	o, code = a.run(nil, "serve", "--config", keyFile)
	outputs = append(outputs, o)
	if code == 0 || !strings.Contains(o, keyFile+":1: want key = value") {
		t.Errorf("serve --config on a key file: exit %d: %s", code, o)
	}

	cfg := filepath.Join(root, "pskvault.toml")
	writeConfig(t, cfg, `node_id = "node-a"`)
	out := a.serveWith("--config", cfg)
	// Replace the file with the key, in several shapes, and reload each.
	shapes := []string{key, "node_id = \"node-a\"\n" + key + " = 1", "[" + key + "]", "log_level = \"" + key + "\"", "[access]\nclient = [\"user:" + key + "\"]"}
	for i, s := range shapes {
		writeConfig(t, cfg, s)
		a.reload(out, i+1)
	}
	a.stop()
	if n := strings.Count(out.String(), "result=failed"); n != len(shapes) {
		t.Errorf("%d failed reloads logged, want %d:\n%s", n, len(shapes), out)
	}
	audit, err := os.ReadFile(filepath.Join(a.dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, out.String(), string(audit))
	for i, o := range outputs {
		if strings.Contains(strings.ToLower(o), key) || strings.Contains(o, key[:16]) {
			t.Errorf("output %d holds the key", i)
		}
	}
}

// TestAgentConfigTrust: the agent's configuration says where keys are
// written and for whom; one that another user owns or can write is refused
// like the daemon's.
func TestAgentConfigTrust(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another uid")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.json")
	n := &node{t: t, dir: filepath.Join(dir, "state"), socket: filepath.Join(dir, "s")}
	for _, tc := range []struct {
		mode os.FileMode
		uid  int
		want string
	}{
		{0o666, 0, "writable by group or others (mode 0666)"},
		{0o644, 65533, "belongs to uid 65533"},
	} {
		os.WriteFile(cfg, []byte(`{"outputs":[]}`), 0o600)
		os.Chmod(cfg, tc.mode)
		os.Chown(cfg, tc.uid, 0)
		if o, code := n.run(nil, "agent", "--config", cfg, "--check"); code == 0 || !strings.Contains(o, tc.want) {
			t.Errorf("agent --check on a %04o file of uid %d: exit %d: %s", tc.mode, tc.uid, code, o)
		}
		os.Remove(cfg)
	}
}
