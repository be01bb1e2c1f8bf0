package pkcs11

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ttyPath is the terminal a prompted PIN is read from; tests point it at a
// pseudo-terminal.
var ttyPath = "/dev/tty"

// promptPIN asks for the PIN on the controlling terminal with echo off. It
// never reads standard input, so a PIN cannot come from a pipe or a script
// by accident, and a daemon without a terminal gets a clear error.
func promptPIN(label string) ([]byte, error) {
	tty, err := os.OpenFile(ttyPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: pin-source=prompt needs a terminal (%v); a daemon reads its PIN from pin-source=file:/path or credential:NAME", ErrPIN, errors.Unwrap(err))
	}
	defer tty.Close()
	fd := int(tty.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not a terminal: %v", ErrPIN, ttyPath, err)
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ECHONL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, fmt.Errorf("%w: cannot turn off echo on %s: %v", ErrPIN, ttyPath, err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprintf(tty, "PIN for PKCS#11 token %q: ", label)

	buf := make([]byte, maxPINLen+1)
	n := 0
	for n < len(buf) {
		m, err := tty.Read(buf[n : n+1])
		if m == 1 && buf[n] == '\n' {
			break
		}
		n += m
		if err != nil {
			clear(buf)
			return nil, fmt.Errorf("%w: reading the PIN from %s: %v", ErrPIN, ttyPath, err)
		}
	}
	pin := buf[:n]
	if len(pin) > 0 && pin[len(pin)-1] == '\r' {
		pin = pin[:len(pin)-1]
	}
	switch {
	case n > maxPINLen:
		clear(buf)
		return nil, fmt.Errorf("%w: the PIN typed is longer than %d bytes", ErrPIN, maxPINLen)
	case len(pin) == 0:
		clear(buf)
		return nil, fmt.Errorf("%w: no PIN typed", ErrPIN)
	}
	return pin, nil
}
