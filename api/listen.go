package api

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pskvault/pskvault/internal/safepath"
)

// ErrSocketInUse reports a live daemon already listening on the socket path.
var ErrSocketInUse = errors.New("socket in use")

// Listen creates a Unix socket at path with mode (0600, 0660 or 0666),
// inside a directory created 0700 (0750 for a 0660 socket, 0755 for a 0666
// data socket, whose callers the daemon checks itself) when missing. A stale
// socket left by a dead daemon is replaced; anything at path that is not a
// socket is never unlinked, and a socket with a live daemon behind it is
// refused.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	dirMode := map[os.FileMode]os.FileMode{0o600: 0o700, 0o660: 0o750, 0o666: 0o755}[mode]
	if dirMode == 0 {
		return nil, fmt.Errorf("socket mode %04o: want 0600, 0660 or 0666", mode)
	}
	dir := filepath.Dir(path)
	// Nothing is created inside a tree someone else controls.
	if err := safepath.CheckDir(filepath.Dir(dir), uint32(os.Geteuid()), true); err != nil {
		return nil, fmt.Errorf("socket directory %s: %w", dir, err)
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		// Missing ancestors (/run/pskvault above admin/ and data/) are
		// created 0755 whatever the umask: the socket's own directory is
		// what guards it, and a data socket must be reachable through them.
		old := umask(0o022)
		err := os.MkdirAll(filepath.Dir(dir), 0o755)
		umask(old)
		if err != nil {
			return nil, fmt.Errorf("create socket directory: %w", err)
		}
		if err := os.Mkdir(dir, dirMode); err != nil {
			return nil, fmt.Errorf("create socket directory: %w", err)
		}
		// The daemon's umask (077) must not narrow a data socket's directory.
		if err := os.Chmod(dir, dirMode); err != nil {
			return nil, fmt.Errorf("create socket directory: %w", err)
		}
	}
	// Every directory above the socket's belongs to root or this user and
	// is writable by no one else (sticky ones aside): nobody else can swap
	// the tree after serve started.
	if err := safepath.CheckDir(dir, uint32(os.Geteuid()), false); err != nil {
		return nil, fmt.Errorf("socket directory %s: %w", dir, err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != uint32(os.Geteuid()) && sys.Uid != 0 {
		return nil, fmt.Errorf("socket directory %s belongs to uid %d, not to this daemon (uid %d) or root: refusing a directory someone else controls", dir, sys.Uid, os.Geteuid())
	}
	if st.Mode().Perm()&0o022 != 0 || (mode == 0o600 && st.Mode().Perm()&0o077 != 0) {
		return nil, fmt.Errorf("socket directory %s has mode %04o: it must not be reachable by others (want %04o)", dir, st.Mode().Perm(), dirMode)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket: refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: a daemon is already listening on %s", ErrSocketInUse, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Create the socket with no permissions for anyone but the owner, then
	// open it up: no window in which others can connect.
	old := umask(0o177)
	l, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return l, nil
}

func umask(m int) int { return unix.Umask(m) }
