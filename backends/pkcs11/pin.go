package pkcs11

import (
	"errors"
	"fmt"

	"github.com/pskvault/pskvault/internal/secretfile"
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
	pin, err := secretfile.Read(source, "pin-source", maxPINLen)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPIN, err)
	}
	for _, c := range pin {
		if c == 0 || c == '\n' {
			clear(pin)
			return nil, fmt.Errorf("%w: pin-source %s holds a NUL or an inner newline; it must contain only the PIN", ErrPIN, source)
		}
	}
	return pin, nil
}
