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
	planted := filepath.Join(root, "planted")
	if err := os.Mkdir(planted, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(planted, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(planted, "admin", "s.sock"), 0o600); err == nil || !strings.Contains(err.Error(), "someone else controls") {
		t.Errorf("socket directory inside a directory another user owns: %v", err)
	}
}
