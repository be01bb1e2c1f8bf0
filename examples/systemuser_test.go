package examples

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// TestDaemonAsSystemUser runs the daemon the way the packaged
// pskvault.service does (issue 13: not as root): as an unprivileged uid of
// its own with no capabilities, its state directory 0700 and its own, and the
// two sockets made by root beforehand and handed over by socket activation
// (systemd-socket-activate stands in for the .socket units: FileDescriptorName
// admin and data, the admin directory 0750 root:ADMINGROUP). Root and a member
// of the admin group administer it through the admin socket; a user outside
// the group cannot even reach the socket; root derives on the data socket.
func TestDaemonAsSystemUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a daemon uid, root-owned socket directories")
	}
	activate := requireTool(t, "systemd-socket-activate")
	setpriv := requireTool(t, "setpriv")
	const daemonUID, adminGID, memberUID = 65531, 65530, 65529
	daemon := &syscall.Credential{Uid: daemonUID, Gid: daemonUID}
	member := &syscall.Credential{Uid: memberUID, Gid: adminGID}
	outsider := &syscall.Credential{Uid: 65533, Gid: 65534}

	root := t.TempDir()
	for _, d := range []string{root, filepath.Dir(root)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(root, "var", "lib", "pskvault")
	adminDir := filepath.Join(root, "run", "pskvault", "admin")
	dataDir := filepath.Join(root, "run", "pskvault", "data")
	for _, d := range []string{filepath.Dir(state), dataDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(adminDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(adminDir, 0, adminGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(state, 0o700); err != nil { // tmpfiles.d / StateDirectory=
		t.Fatal(err)
	}
	if err := os.Chown(state, daemonUID, daemonUID); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(root, "pskvault.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("admin_group = \"%d\"\n", adminGID)), 0o644); err != nil {
		t.Fatal(err)
	}

	// pskvault init, as the daemon's user (runuser -u pskvault -- ...).
	initCmd := exec.Command(pskvaultBin, "--state-dir", state, "init", "--node-id", "n1")
	initCmd.Env = append(os.Environ(), "HOME=/nonexistent")
	initCmd.SysProcAttr = &syscall.SysProcAttr{Credential: daemon}
	if out, err := initCmd.CombinedOutput(); err != nil {
		t.Fatalf("init as uid %d: %v\n%s", daemonUID, err, out)
	}

	admin := filepath.Join(adminDir, "pskvault.sock")
	data := filepath.Join(dataDir, "pskvault.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := exec.CommandContext(ctx, activate, "-l", admin, "-l", data, "--fdname=admin:data",
		setpriv, fmt.Sprintf("--reuid=%d", daemonUID), fmt.Sprintf("--regid=%d", daemonUID), "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all",
		pskvaultBin, "--state-dir", state, "serve", "--config", cfg)
	srv.Env = append(os.Environ(), "HOME=/nonexistent")
	var log syncbuf.Buffer
	srv.Stdout, srv.Stderr = &log, &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); srv.Wait() }()

	c := client.New(admin, client.WithDaemonUID(daemonUID))
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Status(rctx)
		rcancel()
		if err == nil && strings.Contains(log.String(), "using sockets from systemd") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon as uid %d not answering on the activated admin socket: %v\n%s", daemonUID, err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The sockets' owners and modes, as the .socket units set them
	// (SocketMode=, SocketGroup=); systemd-socket-activate has no such
	// options.
	if err := os.Chown(admin, 0, adminGID); err != nil {
		t.Fatal(err)
	}
	for p, m := range map[string]os.FileMode{admin: 0o660, data: 0o666} {
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", srv.Process.Pid)); err != nil || !bytes.Contains(b, []byte(fmt.Sprintf("\nUid:\t%d\t%d\t%d\t%d\n", daemonUID, daemonUID, daemonUID, daemonUID))) {
		t.Fatalf("the daemon is not running as uid %d: %v", daemonUID, err)
	}

	// Root creates a PSK through the admin socket and derives its
	// imported key on the data socket (default access: root and the
	// daemon's user).
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	id, key, err := c.Create(rctx, client.PSKSpec{Identity: []byte("sysuser-1"), ClientNode: "n1", ServerNode: "n2"})
	if err != nil {
		t.Fatalf("create as root: %v\n%s", err, log.String())
	}
	clear(key)
	dc := client.New(data, client.WithDaemonUID(daemonUID))
	defer dc.Close()
	d, err := dc.Derive(rctx, client.DeriveRequest{Identity: id, Context: []byte("ctx"), Protocol: "tls1.3", KDF: "sha256"})
	if err != nil {
		t.Fatalf("derive as root on the data socket: %v", err)
	}
	if len(d.IPSKX) != 32 {
		t.Fatalf("derived key of %d bytes, want 32", len(d.IPSKX))
	}
	clear(d.IPSKX)

	// A member of the admin group reaches the admin socket through the
	// 0750 directory and is an admin; an outsider cannot connect at all.
	env := append(os.Environ(), "HOME=/nonexistent", fmt.Sprintf("PSKVAULT_DAEMON_UID=%d", daemonUID))
	list := func(cred *syscall.Credential) (string, error) {
		cmd := exec.Command(pskvaultBin, "--socket", admin, "psk", "list")
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := list(member); err != nil || !strings.Contains(out, "sysuser-1") {
		t.Fatalf("psk list as a member of the admin group: %v\n%s", err, out)
	}
	// pskvault-sweep.service: the daemon's own user in the admin group,
	// the socket from PSKVAULT_SOCKET, no PSKVAULT_DAEMON_UID (a daemon
	// of the caller's own uid is trusted).
	sweep := exec.Command(pskvaultBin, "psk", "sweep")
	sweep.Env = append(os.Environ(), "HOME=/nonexistent", "PSKVAULT_SOCKET="+admin, "PSKVAULT_DAEMON_UID=")
	sweep.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: daemonUID, Gid: daemonUID, Groups: []uint32{adminGID}}}
	if out, err := sweep.CombinedOutput(); err != nil {
		t.Fatalf("psk sweep as pskvault-sweep.service runs it: %v\n%s", err, out)
	}
	out, err := list(outsider)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || strings.Contains(out, "sysuser-1") {
		t.Fatalf("psk list as uid %d outside the admin group: want a refusal, got %v\n%s", outsider.Uid, err, out)
	}
}
