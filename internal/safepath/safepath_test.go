package safepath

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCheckDir: one row per rule, with directories of this user (the
// owner rule for other uids is exercised as root in api and cmd tests).
func TestCheckDir(t *testing.T) {
	uid := uint32(os.Geteuid())
	root := t.TempDir()
	mk := func(p string, mode os.FileMode) string {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := mk("a/b", 0o700)
	gw := mk("gw/c", 0o700)
	os.Chmod(filepath.Join(root, "gw"), 0o770)
	ow := mk("ow/c", 0o700)
	os.Chmod(filepath.Join(root, "ow"), 0o757)
	st := mk("st/c", 0o700)
	os.Chmod(filepath.Join(root, "st"), os.ModeSticky|0o777)
	os.Symlink("a/b", filepath.Join(root, "rel"))                            // relative link to a good dir
	os.Symlink(filepath.Join(root, "gw", "c"), filepath.Join(root, "tobad")) // link into a bad tree
	os.Symlink("loop2", filepath.Join(root, "loop1"))
	os.Symlink("loop1", filepath.Join(root, "loop2"))
	os.WriteFile(filepath.Join(root, "file"), nil, 0o600)
	for _, tc := range []struct{ path, want string }{
		{ok, ""},
		{st, ""},
		{filepath.Join(root, "rel"), ""},
		{gw, "gw is writable by group or others (mode 0770)"},
		{ow, "ow is writable by group or others (mode 0757)"},
		{filepath.Join(root, "tobad"), "gw is writable by group or others"},
		{filepath.Join(root, "loop1"), "too many levels of symbolic links"},
		{filepath.Join(root, "file", "x"), "file is not a directory"},
		{filepath.Join(root, "missing"), "no such file"},
	} {
		err := CheckDir(tc.path, uid, false)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.path, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
		}
	}
	if err := CheckDir(filepath.Join(root, "a", "missing", "deeper"), uid, true); err != nil {
		t.Errorf("allowMissing: %v", err)
	}
	if err := CheckDir(filepath.Join(gw, "missing"), uid, true); err == nil {
		t.Error("allowMissing let a bad existing ancestor through")
	}
}

// TestOpenFile: links, FIFOs, extra links, open modes and other owners are
// refused, naming the path; a good file opens.
func TestOpenFile(t *testing.T) {
	uid := uint32(os.Geteuid())
	d := t.TempDir()
	p := func(n string) string { return filepath.Join(d, n) }
	os.WriteFile(p("good"), []byte("x"), 0o600)
	os.WriteFile(p("open"), nil, 0o644)
	os.WriteFile(p("grp"), nil, 0o640)
	os.WriteFile(p("target"), nil, 0o600)
	os.Symlink(p("target"), p("link"))
	syscall.Mkfifo(p("fifo"), 0o600)
	os.WriteFile(p("two"), nil, 0o600)
	os.Link(p("two"), p("two-b"))
	for _, tc := range []struct {
		name, want string
		rules      FileRules
	}{
		{"good", "", FileRules{}},
		{"grp", "", FileRules{GroupReadable: true}},
		{"grp", "has mode 0640", FileRules{}},
		{"open", "has mode 0644", FileRules{GroupReadable: true}},
		{"link", "is a symbolic link", FileRules{}},
		{"fifo", "not a regular file (a FIFO)", FileRules{}},
		{"two", "has 2 hard links", FileRules{}},
	} {
		f, err := OpenFile(p(tc.name), os.O_RDONLY, 0, uid, tc.rules)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			} else {
				f.Close()
			}
			continue
		}
		if err == nil {
			f.Close()
			t.Errorf("%s: opened", tc.name)
		} else if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), p(tc.name)) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := OpenFile(p("good"), os.O_RDONLY, 0, uid+1, FileRules{}); err == nil || !strings.Contains(err.Error(), "belongs to uid") {
		t.Errorf("another owner: %v", err)
	}
	f, err := OpenFile(p("new"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600, uid, FileRules{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	f.Close()
}
