// Package secretfile reads a small secret named by a source string, so that
// secrets reach pskvault neither on argv nor in the environment:
//
//	file:PATH        a regular file readable by its owner only (0600 or 0400)
//	credential:NAME  a systemd credential, $CREDENTIALS_DIRECTORY/NAME
//	                 (LoadCredential= or LoadCredentialEncrypted=)
//
// One trailing newline (echo > file) is not part of the secret.
package secretfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ErrSource reports a source that names nothing readable, or a file that
// is too open, empty or too long.
var ErrSource = errors.New("secret source")

// Read returns the secret that source names, in a buffer the caller must
// clear. option is the name the user gave the source under (pin-source,
// auth-source), for messages; maxLen bounds the secret.
func Read(source, option string, maxLen int) ([]byte, error) {
	var path string
	switch {
	case strings.HasPrefix(source, "file:"):
		path = strings.TrimPrefix(source, "file:")
	case strings.HasPrefix(source, "credential:"):
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fmt.Errorf("%w: %s %s: $CREDENTIALS_DIRECTORY is not set (run under systemd with LoadCredential= or LoadCredentialEncrypted=)", ErrSource, option, source)
		}
		name := strings.TrimPrefix(source, "credential:")
		if name == "" || strings.ContainsRune(name, '/') {
			return nil, fmt.Errorf("%w: %s %s: a credential name is one path element", ErrSource, option, source)
		}
		path = filepath.Join(dir, name)
	default:
		return nil, fmt.Errorf("%w: unknown %s %q (want file:PATH or credential:NAME)", ErrSource, option, source)
	}
	if path == "" {
		return nil, fmt.Errorf("%w: %s %q names no file", ErrSource, option, source)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s %s: %v", ErrSource, option, path, errors.Unwrap(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %v", ErrSource, option, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s %s is not a regular file", ErrSource, option, path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s %s is accessible by group or others (mode %04o); run chmod 600 %s", ErrSource, option, path, fi.Mode().Perm(), path)
	}
	buf := make([]byte, maxLen+1)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		clear(buf)
		return nil, fmt.Errorf("%w: reading %s %s: %v", ErrSource, option, path, err)
	}
	if n > maxLen {
		clear(buf)
		return nil, fmt.Errorf("%w: %s %s is longer than %d bytes", ErrSource, option, path, maxLen)
	}
	s := buf[:n]
	if len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
		if len(s) > 0 && s[len(s)-1] == '\r' {
			s = s[:len(s)-1]
		}
	}
	if len(s) == 0 {
		clear(buf)
		return nil, fmt.Errorf("%w: %s %s is empty", ErrSource, option, path)
	}
	return s, nil
}
