package pkcs11

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ErrPIN reports a PIN source that cannot be read or a PIN the token
// refused. pskvault never retries a refused PIN: retrying is how tokens get
// locked.
var ErrPIN = errors.New("PKCS#11 PIN")

// maxPINLen bounds what a PIN file may hold.
const maxPINLen = 256

// readPIN reads the PIN a pin-source names into a buffer the caller must
// clear. An empty source returns nil (no PIN). A file or credential that is
// group- or world-accessible is refused.
func readPIN(source string) ([]byte, error) {
	if source == "" {
		return nil, nil
	}
	var path string
	switch {
	case strings.HasPrefix(source, "file:"):
		path = strings.TrimPrefix(source, "file:")
	case strings.HasPrefix(source, "credential:"):
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fmt.Errorf("%w: pin-source %s: $CREDENTIALS_DIRECTORY is not set (run under systemd with LoadCredential= or SetCredentialEncrypted=)", ErrPIN, source)
		}
		path = filepath.Join(dir, strings.TrimPrefix(source, "credential:"))
	default:
		return nil, fmt.Errorf("%w: unknown pin-source %q", ErrPIN, source)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: reading pin-source %s: %v", ErrPIN, path, errors.Unwrap(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: pin-source %s: %v", ErrPIN, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: pin-source %s is not a regular file", ErrPIN, path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: pin-source %s is accessible by group or others (mode %04o); run chmod 600 %s", ErrPIN, path, fi.Mode().Perm(), path)
	}
	buf := make([]byte, maxPINLen+1)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		clear(buf)
		return nil, fmt.Errorf("%w: reading pin-source %s: %v", ErrPIN, path, err)
	}
	if n > maxPINLen {
		clear(buf)
		return nil, fmt.Errorf("%w: pin-source %s is longer than %d bytes", ErrPIN, path, maxPINLen)
	}
	pin := buf[:n]
	// One trailing newline (echo > file) is not part of the PIN.
	if len(pin) > 0 && pin[len(pin)-1] == '\n' {
		pin = pin[:len(pin)-1]
		if len(pin) > 0 && pin[len(pin)-1] == '\r' {
			pin = pin[:len(pin)-1]
		}
	}
	if len(pin) == 0 {
		clear(buf)
		return nil, fmt.Errorf("%w: pin-source %s is empty", ErrPIN, path)
	}
	for _, c := range pin {
		if c == 0 || c == '\n' {
			clear(buf)
			return nil, fmt.Errorf("%w: pin-source %s holds a NUL or an inner newline; it must contain only the PIN", ErrPIN, path)
		}
	}
	return pin, nil
}
