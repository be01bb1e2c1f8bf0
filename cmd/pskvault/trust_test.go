package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/internal/squatter"
)

var (
	victim    = &syscall.Credential{Uid: 65534, Gid: 65534} // runs the CLI
	squatterU = &syscall.Credential{Uid: 65533, Gid: 65534} // took the path first
)

// otherUserDir is a fresh directory that other uids may traverse, with the
// binary reachable by them too.
func otherUserDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(binary), d, filepath.Dir(d)} {
		os.Chmod(p, 0o755)
	}
	return d
}

// runCLIAs runs the binary as cred with exactly env and returns combined
// output and exit status.
func runCLIAs(t *testing.T, cred *syscall.Credential, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("run pskvault as uid %d: %v", cred.Uid, err)
	}
	return string(out), 0
}

// victimKeyFile writes a key file the victim uid owns and returns its path
// and the key's hex.
func victimKeyFile(t *testing.T, dir string) (string, string) {
	t.Helper()
	kd := filepath.Join(dir, "victim")
	if err := os.Mkdir(kd, 0o700); err != nil {
		t.Fatal(err)
	}
	key := hex.EncodeToString(testKey(32))
	p := filepath.Join(kd, "key.hex")
	if err := os.WriteFile(p, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{kd, p} {
		if err := os.Chown(f, int(victim.Uid), int(victim.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	return p, key
}

func sticky(t *testing.T, p string) string {
	t.Helper()
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCLIRefusesSquattedSocket (issue 11 item 1): another local user
// listens first on the socket path a user's CLI is given. The import and
// the create are refused before anything is sent: the squatter receives not
// one byte, no key file is written, and the error names the uid found.
func TestCLIRefusesSquattedSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the CLI and the squatter as other uids")
	}
	dir := otherUserDir(t)
	shared := sticky(t, filepath.Join(dir, "shared"))
	sock := filepath.Join(shared, "pskvault-65534", "admin", "pskvault.sock")
	sq := squatter.Start(t, sock, squatterU)
	keyFile, keyHex := victimKeyFile(t, dir)
	out := filepath.Join(filepath.Dir(keyFile), "peer.hex")
	env := []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "PSKVAULT_STATE_DIR=" + filepath.Join(dir, "victim", "state")}

	var outputs []string
	for _, args := range [][]string{
		{"--socket", sock, "psk", "import", "--identity", "web-1", "--client", "node-a", "--server", "node-b", "--key-file", keyFile},
		{"--socket", sock, "psk", "create", "--identity", "web-2", "--client", "node-a", "--server", "node-b", "--out", out},
	} {
		o, code := runCLIAs(t, victim, env, args...)
		outputs = append(outputs, o)
		if code == 0 || !strings.Contains(o, "runs as uid 65533") || !strings.Contains(o, "PSKVAULT_DAEMON_UID=65533") || !strings.Contains(o, "hint:") {
			t.Errorf("%s to a socket uid 65533 listens on: exit %d: %s", args[2:4], code, o)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("psk create wrote %s from the squatter's answer (%v)", out, err)
	}
	got := sq.Conns(2, 10*time.Second)
	if len(got) != 2 {
		t.Fatalf("the squatter saw %d connections end, want 2", len(got))
	}
	for i, n := range got {
		if n != 0 {
			t.Errorf("connection %d: the squatter received %d bytes", i, n)
		}
	}
	for i, o := range outputs {
		if strings.Contains(strings.ToLower(o), keyHex) {
			t.Errorf("output %d holds the EPSK", i)
		}
	}

	// Control: told to trust uid 65533, the same CLI does send the import
	// there, so the zero counts above are the check's doing.
	o, _ := runCLIAs(t, victim, append(env, "PSKVAULT_DAEMON_UID=65533"),
		"--socket", sock, "psk", "import", "--identity", "web-1", "--client", "node-a", "--server", "node-b", "--key-file", keyFile)
	if got := sq.Conns(3, 10*time.Second); len(got) != 3 || got[2] == 0 {
		t.Fatalf("with PSKVAULT_DAEMON_UID=65533 the import did not reach the squatter (%v): %s", got, o)
	}
}

// TestCLINoTmpSocket (issue 11 item 1): without XDG_RUNTIME_DIR and
// PSKVAULT_SOCKET (su, sudo -u, cron) a non-root CLI used to dial
// $TMPDIR/pskvault-UID/admin/pskvault.sock, a path any local user can take
// first. Now it dials nothing and says how to name a socket.
func TestCLINoTmpSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the CLI and the squatter as other uids")
	}
	if _, err := os.Stat("/run/user/65534"); err == nil {
		t.Skip("/run/user/65534 exists: the CLI would use it")
	}
	dir := otherUserDir(t)
	tmp := sticky(t, filepath.Join(dir, "tmp"))
	sq := squatter.Start(t, filepath.Join(tmp, "pskvault-65534", "admin", "pskvault.sock"), squatterU)
	keyFile, keyHex := victimKeyFile(t, dir)
	env := []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "TMPDIR=" + tmp, "PSKVAULT_STATE_DIR=" + filepath.Join(dir, "victim", "state")}
	o, code := runCLIAs(t, victim, env, "psk", "import", "--identity", "web-1", "--client", "node-a", "--server", "node-b", "--key-file", keyFile)
	if code == 0 || !strings.Contains(o, "no socket path") || !strings.Contains(o, "hint: give --socket PATH or set PSKVAULT_SOCKET") {
		t.Errorf("import with no socket configured: exit %d: %s", code, o)
	}
	if strings.Contains(strings.ToLower(o), keyHex) {
		t.Error("the output holds the EPSK")
	}
	if got := sq.Conns(1, 2*time.Second); len(got) != 0 {
		t.Errorf("the CLI connected to the squatter in $TMPDIR: %v", got)
	}
	// serve, too, refuses to pick a path for itself.
	o, code = runCLIAs(t, victim, env, "serve")
	if code == 0 || !bytes.Contains([]byte(o), []byte("no socket path")) {
		t.Errorf("serve with no socket configured: exit %d: %s", code, o)
	}
}
