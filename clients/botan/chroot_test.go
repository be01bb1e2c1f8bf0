package botan

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestChrootScriptRebuildsIncomplete: chroot.sh takes a chroot without its
// completion stamp for an interrupted build and removes it, and removes a
// leftover DIR.partial after unmounting what is mounted inside it (as an
// interrupted debootstrap leaves /proc), never descending into the mounted
// file system; a failed debootstrap leaves nothing behind and says so. The
// mirror is unreachable on purpose, so nothing is downloaded.
func TestChrootScriptRebuildsIncomplete(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
			t.Fatal("needs root (PSKVAULT_REQUIRE_SIMULATORS=1)")
		}
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
			t.Fatal("debootstrap not installed (PSKVAULT_REQUIRE_SIMULATORS=1)")
		}
		t.Skip("debootstrap not installed")
	}
	base := t.TempDir()
	dir := filepath.Join(base, "forky")
	// An interrupted earlier build: a tree without the stamp ...
	if err := os.MkdirAll(filepath.Join(dir, "usr", "include"), 0o755); err != nil {
		t.Fatal(err)
	}
	// ... and a DIR.partial with a file system still mounted in it, holding
	// a file that must survive (it stands for the host's /proc).
	mnt := filepath.Join(dir+".partial", "proc")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("pskvault-test", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	keep := filepath.Join(mnt, "must-survive")
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Watch the mounted file system from outside the tree: a second mount
	// of nothing else would do, so hold an open directory on it.
	held, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "./chroot.sh")
	cmd.Env = append(os.Environ(), "PSKVAULT_FORKY_CHROOT="+dir, "PSKVAULT_DEBIAN_MIRROR=http://127.0.0.1:9/debian")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if err == nil {
		t.Fatalf("chroot.sh succeeded with an unreachable mirror:\n%s", stderr.String())
	}
	for _, want := range []string{"is incomplete or stale; rebuilding it", "debootstrap failed"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	for _, p := range []string{dir, dir + ".partial"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists after the failed rebuild (err %v)", p, err)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mounts, []byte(mnt)) {
		t.Errorf("%s is still mounted", mnt)
	}
	// The file on the formerly mounted file system was not removed through
	// the tree: its directory, still open, still lists it.
	names, err := held.Readdirnames(-1)
	if err != nil || len(names) != 1 || names[0] != "must-survive" {
		t.Errorf("the mounted file system was emptied through the chroot tree: %v %v", names, err)
	}
}
