package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/internal/syncbuf"
)

// startServe starts `serve` as cred (nil: this process) and waits until it
// either exits (returns its output and true) or listens on sock (returns
// false; the daemon is stopped in t.Cleanup).
func startServe(t *testing.T, cred *syscall.Credential, sock string, args ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return out.String(), true
		default:
		}
		if st, err := os.Stat(sock); err == nil && st.Mode().Type() == os.ModeSocket {
			return out.String(), false
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("serve neither exited nor listened in 20 s: %s", out.String())
	return "", false
}

// TestStateOwnedByAnother (issue 11 item 2): uid 65533 makes a vault with a
// PSK whose key he knows. Root's daemon must not serve it, whether the
// state dir itself is his or root's state dir reaches his vault.db and
// soft.kek through symbolic links; nor a FIFO, a hard-linked file, or a
// file of his in root's state dir.
func TestStateOwnedByAnother(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another uid")
	}
	attacker := &syscall.Credential{Uid: 65533, Gid: 65534}
	dir := otherUserDir(t)
	att := filepath.Join(dir, "att")
	if err := os.Mkdir(att, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(att, int(attacker.Uid), int(attacker.Gid))
	attState, attSock := filepath.Join(att, "state"), filepath.Join(att, "run", "admin", "pskvault.sock")
	env := []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	if o, code := runCLIAs(t, attacker, env, "--state-dir", attState, "init", "--node-id", "node-a"); code != 0 {
		t.Fatalf("attacker init: %s", o)
	}
	if o, exited := startServe(t, attacker, attSock, "--state-dir", attState, "--socket", attSock, "serve", "--data-socket", "none", "--audit-log", "-"); exited {
		t.Fatalf("attacker serve: %s", o)
	}
	attKey := testKey(32)
	keyFile := filepath.Join(att, "key.hex")
	os.WriteFile(keyFile, []byte(hex.EncodeToString(attKey)), 0o600)
	os.Chown(keyFile, int(attacker.Uid), int(attacker.Gid))
	if o, code := runCLIAs(t, attacker, env, "--socket", attSock, "psk", "import", "--identity", "web-1", "--client", "node-a", "--server", "node-b", "--key-file", keyFile); code != 0 {
		t.Fatalf("attacker import: %s", o)
	}
	if o, code := runCLIAs(t, attacker, env, "--socket", attSock, "derive", "--identity", "web-1", "--json"); code != 0 {
		t.Fatalf("attacker derive: exit %d", code)
	} else if !json.Valid([]byte(o)) {
		t.Fatal("attacker derive: not JSON")
	}
	// (his daemon keeps running: bbolt's lock would stop root's anyway, so
	// stop it to make the file-level checks the only thing in the way)
	pidOut, _ := exec.Command("pgrep", "-u", "65533", "-f", attSock).Output()
	for _, p := range strings.Fields(string(pidOut)) {
		exec.Command("kill", p).Run()
	}
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(attSock); err != nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}

	rootSock := func(name string) string { return filepath.Join(dir, "root-"+name, "admin", "pskvault.sock") }
	check := func(name, state, want string) {
		t.Helper()
		sock := rootSock(name)
		o, exited := startServe(t, nil, sock, "--state-dir", state, "--socket", sock, "serve", "--data-socket", "none", "--audit-log", "-")
		if !exited {
			// The old behaviour: root serves the attacker's vault.
			out, _ := exec.Command(binary, "--socket", sock, "derive", "--identity", "web-1", "--json").Output()
			var r struct{ IPSKX string }
			json.Unmarshal(out, &r)
			t.Errorf("%s: root's daemon served a vault uid 65533 controls (it derives web-1: %v)", name, r.IPSKX != "")
			return
		}
		if !strings.Contains(o, want) {
			t.Errorf("%s: serve refused, but not saying %q: %s", name, want, o)
		}
	}

	// 1. The state dir is below a directory of his, then is his.
	check("below", attState, att+" belongs to uid 65533")
	moved := filepath.Join(dir, "att-state")
	if err := os.Rename(attState, moved); err != nil {
		t.Fatal(err)
	}
	attState = moved
	check("owned", attState, "state dir "+attState+" belongs to uid 65533")

	// 2. Root's own state dir, with links to his files.
	mine := func(name string) string {
		state := filepath.Join(dir, "root-"+name+"-state")
		if o, code := (&node{t: t, dir: state, socket: rootSock(name)}).run(nil, "init", "--node-id", "node-a"); code != 0 {
			t.Fatalf("root init: %s", o)
		}
		return state
	}
	links := mine("links")
	for _, f := range []string{"vault.db", "soft.kek"} {
		os.Remove(filepath.Join(links, f))
		if err := os.Symlink(filepath.Join(attState, f), filepath.Join(links, f)); err != nil {
			t.Fatal(err)
		}
	}
	check("links", links, "vault.db is a symbolic link")
	keysLink := mine("keyslink")
	os.Remove(filepath.Join(keysLink, "vault.keys"))
	if err := os.Symlink(filepath.Join(attState, "vault.keys"), filepath.Join(keysLink, "vault.keys")); err != nil {
		t.Fatal(err)
	}
	check("keyslink", keysLink, "vault.keys is a symbolic link")

	// 3. A file of his in root's state dir (root moved it there, or the dir
	// was his once).
	theirs := mine("theirs")
	os.Chown(filepath.Join(theirs, "soft.kek"), int(attacker.Uid), int(attacker.Gid))
	check("theirs", theirs, "soft.kek belongs to uid 65533")

	// 4. A FIFO where vault.db should be: refused without blocking.
	fifo := mine("fifo")
	os.Remove(filepath.Join(fifo, "vault.db"))
	if err := syscall.Mkfifo(filepath.Join(fifo, "vault.db"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("fifo", fifo, "vault.db is not a regular file (a FIFO)")

	// 5. soft.kek with a second name elsewhere.
	linked := mine("linked")
	if err := os.Link(filepath.Join(linked, "soft.kek"), filepath.Join(dir, "kek-copy")); err != nil {
		t.Fatal(err)
	}
	check("linked", linked, "soft.kek has 2 hard links")

	// 6. The audit log a link to his file.
	audit := mine("audit")
	attLog := filepath.Join(att, "log")
	os.WriteFile(attLog, nil, 0o600)
	os.Chown(attLog, int(attacker.Uid), int(attacker.Gid))
	os.Symlink(attLog, filepath.Join(audit, "audit.log"))
	sock := rootSock("audit")
	o, exited := startServe(t, nil, sock, "--state-dir", audit, "--socket", sock, "serve", "--data-socket", "none")
	if !exited || !strings.Contains(o, "audit.log is a symbolic link") {
		t.Errorf("audit log through a link to uid 65533's file: exited %v: %s", exited, o)
	}
	if b, _ := os.ReadFile(attLog); len(bytes.TrimSpace(b)) > 0 {
		t.Error("root's daemon wrote its audit log into uid 65533's file")
	}
}
