package secretfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := write("ok", "s3cret\r\n", 0o600)
	if s, err := Read("file:"+ok, "test-source", 64); err != nil || string(s) != "s3cret" {
		t.Fatalf("got %q, %v; want the secret without its trailing newline", s, err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	if s, err := Read("credential:ok", "test-source", 64); err != nil || string(s) != "s3cret" {
		t.Fatalf("credential: got %q, %v", s, err)
	}
	for _, c := range []struct{ name, source, want string }{
		{"group-readable", "file:" + write("loose", "x", 0o640), "chmod 600"},
		{"empty", "file:" + write("empty", "\n", 0o600), "is empty"},
		{"too long", "file:" + write("long", strings.Repeat("x", 65), 0o600), "longer than 64"},
		{"a directory", "file:" + dir, "not a regular file"},
		{"missing", "file:" + filepath.Join(dir, "none"), "reading test-source"},
		{"credential path", "credential:../ok", "one path element"},
		{"unknown kind", "env:SECRET", "unknown test-source"},
		{"no path", "file:", "names no file"},
	} {
		_, err := Read(c.source, "test-source", 64)
		if !errors.Is(err, ErrSource) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrSource saying %q", c.name, err, c.want)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if _, err := Read("credential:ok", "test-source", 64); err == nil || !strings.Contains(err.Error(), "CREDENTIALS_DIRECTORY") {
		t.Errorf("credential without $CREDENTIALS_DIRECTORY: %v", err)
	}
}
