package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListenLayout: missing ancestors are created reachable (0755) while the
// socket's own directory guards it; a parent someone else controls is refused.
func TestListenLayout(t *testing.T) {
	old := umask(0o077)
	defer umask(old)
	root := t.TempDir()
	admin, err := Listen(filepath.Join(root, "run", "admin", "s.sock"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	data, err := Listen(filepath.Join(root, "run", "data", "s.sock"), 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	for dir, want := range map[string]os.FileMode{"run": 0o755, "run/admin": 0o700, "run/data": 0o755} {
		st, err := os.Stat(filepath.Join(root, dir))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %04o (%v)", dir, st.Mode().Perm(), want, err)
		}
	}
	if _, err := Listen(filepath.Join(root, "run", "data", "s.sock"), 0o666); err == nil {
		t.Error("a second daemon could take a live socket")
	}
	if err := os.WriteFile(filepath.Join(root, "run", "data", "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(root, "run", "data", "file"), 0o666); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("replaced a regular file: %v", err)
	}

	if os.Geteuid() != 0 {
		return
	}
	// Every ancestor counts, not only the parent (issue 11 item 1): a
	// directory two levels up that another user owns, or that group or
	// others may write, lets them swap the whole tree after serve started.
	mk := func(p string, mode os.FileMode, uid int) {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	mk(filepath.Join(root, "planted"), 0o755, 65534)
	mk(filepath.Join(root, "up2"), 0o755, 65534)
	mk(filepath.Join(root, "up2", "mine"), 0o755, 0)
	mk(filepath.Join(root, "gw"), 0o775, 0)
	mk(filepath.Join(root, "gw", "mine"), 0o755, 0)
	mk(filepath.Join(root, "sticky"), os.ModeSticky|0o777, 0)
	mk(filepath.Join(root, "sticky", "mine"), 0o755, 0)
	mk(filepath.Join(root, "sticky", "theirs"), 0o755, 65534)
	if err := os.Symlink(filepath.Join(root, "sticky", "mine"), filepath.Join(root, "sticky", "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(root, "sticky", "link"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "up2", "mine"), filepath.Join(root, "tolink")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		{"planted", "planted belongs to uid 65534"},
		{"up2/mine/run", "up2 belongs to uid 65534"},
		{"gw/mine/run", "gw is writable by group or others (mode 0775)"},
		{"sticky/theirs/run", "theirs belongs to uid 65534"},
		{"sticky/link/run", "link belongs to uid 65534"},
		{"tolink/run", "up2 belongs to uid 65534"}, // through a link of root's
		{"sticky/mine/run", ""},                    // a root-owned sticky directory above is fine
	} {
		sock := filepath.Join(root, tc.dir, "admin", "s.sock")
		l, err := Listen(sock, 0o600)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.dir, err)
			} else {
				l.Close()
			}
			continue
		}
		if err == nil {
			l.Close()
			t.Errorf("%s: listened in a tree another user controls", tc.dir)
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.dir, err, tc.want)
		}
		if strings.HasPrefix(tc.dir, "up2/") || strings.HasPrefix(tc.dir, "gw/") {
			if _, err := os.Stat(filepath.Join(root, tc.dir)); err == nil {
				t.Errorf("%s: created directories inside a tree another user controls", tc.dir)
			}
		}
	}
}
