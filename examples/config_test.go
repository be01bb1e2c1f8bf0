package examples

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/internal/syncbuf"
)

// TestConfigCheck: `pskvault config check` reports each problem with its line.
func TestConfigCheck(t *testing.T) {
	n := &node{stateDir: t.TempDir(), socket: "/nonexistent/a.sock", data: "/nonexistent/d.sock"}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("node_id = \"node-a\"\n[access]\nclient = [\"user:65534\"]\n[[psk]]\nidentity = \"web-1\"\nserver = [\"group:0\"]\n"), 0o600)
	if o, e, err := n.run(nil, "config", "check", "--config", good); err != nil || !strings.Contains(o, "ok") {
		t.Fatalf("good file: %v %s %s", err, o, e)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("node_id = \"node-a\"\nsocket = \"/x\"\n\n[access]\nclient = [\"uzer:1\"]\nmlock = \"on\"\n"), 0o600)
	_, e, err := n.run(nil, "config", "check", "--config", bad)
	if err == nil {
		t.Fatal("bad file passed")
	}
	for _, want := range []string{bad + ":2: unknown key (not repeated here; known: node_id,", bad + ":5: client: entry 1: want user:NAME", bad + ":6: unknown key in [access] (not repeated here; known: client, server)"} {
		if !strings.Contains(e, want) {
			t.Errorf("missing %q in:\n%s", want, e)
		}
	}
}

// TestConfigAccessLists: per-PSK rules from the file; a PSK without a rule
// falls back to [access], which here allows nobody.
func TestConfigAccessLists(t *testing.T) {
	requireRoot(t)
	cfg := filepath.Join(tempDir(t), "pskvault.toml")
	os.WriteFile(cfg, []byte("node_id = \"node-a\"\n\n[[psk]]\nidentity = \"web-1\"\nclient = [\"user:65534\"]\n"), 0o644)
	a := newNode(t, "node-a", "--config", cfg)
	for _, id := range []string{"web-1", "web-2"} {
		a.cli(t, "psk", "create", "--identity", id, "--client", "node-a", "--server", "node-b", "--out", filepath.Join(t.TempDir(), "k"))
	}
	if _, e, err := a.run(allowedUser, "derive", "--identity", "web-1"); err != nil {
		t.Fatalf("uid 65534 on web-1: %v %s", err, e)
	}
	if _, e, err := a.run(allowedUser, "derive", "--identity", "web-2"); err == nil || !strings.Contains(e, "no such PSK") {
		t.Fatalf("uid 65534 on web-2: %v %s", err, e)
	}
}

// TestSocketActivation: sockets passed the systemd way (LISTEN_PID,
// LISTEN_FDS, LISTEN_FDNAMES) are used, and the variables are not passed on;
// a socket path holding a regular file is never unlinked.
func TestSocketActivation(t *testing.T) {
	base := tempDir(t)
	state := filepath.Join(base, "state")
	n := &node{stateDir: state, socket: filepath.Join(base, "admin", "s"), data: filepath.Join(base, "data", "s")}
	n.cli(t, "init", "--node-id", "node-a")
	os.Mkdir(filepath.Join(base, "admin"), 0o700)
	os.Mkdir(filepath.Join(base, "data"), 0o755)
	files := make([]*os.File, 2)
	for i, p := range []string{n.socket, n.data} {
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		files[i], _ = l.(*net.UnixListener).File()
		l.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=admin:data exec "$0" --state-dir "$1" --socket /nonexistent/unused serve`, pskvaultBin, state)
	cmd.ExtraFiles = files
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	c := client.New(n.data)
	defer c.Close()
	var err error
	for range 200 {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		_, err = c.Status(cctx)
		ccancel()
		if err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("activated daemon not answering on the data socket: %v\n%s", err, stderr.String())
	}
	// The daemon logs before it serves, but its stderr reaches us through
	// a pipe and os/exec's copying goroutine: give the copy a moment.
	for i := 0; i < 200 && !strings.Contains(stderr.String(), "using sockets from systemd"); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "using sockets from systemd") {
		t.Fatalf("daemon did not say it used the passed sockets:\n%s", stderr.String())
	}
	// Not a socket: refused, left alone.
	reg := filepath.Join(base, "regular", "file")
	os.MkdirAll(filepath.Dir(reg), 0o700)
	os.WriteFile(reg, []byte("keep me"), 0o600)
	m := &node{stateDir: filepath.Join(base, "state2"), socket: reg, data: filepath.Join(base, "data2", "s")}
	m.cli(t, "init", "--node-id", "node-b")
	_, e, err := m.run(nil, "serve")
	if err == nil || !strings.Contains(e, "not a socket") {
		t.Fatalf("serve on a regular file: %v %s", err, e)
	}
	if b, _ := os.ReadFile(reg); string(b) != "keep me" {
		t.Fatal("the regular file was touched")
	}
}
