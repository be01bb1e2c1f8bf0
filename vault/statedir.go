package vault

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/pskvault/pskvault/internal/safepath"
)

// ErrUnsafeState reports a state directory, or a file in it, that someone
// other than the daemon's user could have planted or changed: the vault
// refuses to use it. The error names the path and the problem.
var ErrUnsafeState = errors.New("state directory not private")

// The state directory belongs to the daemon's user alone (issue 11 item 2):
//
//   - the directory is owned by the effective uid (root's daemon: root), has
//     mode 0700 (no bit for group or others), and every directory above it
//     passes internal/safepath (owned by root or the daemon, writable by no
//     one else unless sticky), so no one else can add, rename or replace
//     anything in it;
//   - every entry in it is owned by the daemon's uid or root (anything else
//     was put there by someone who should not have been able to);
//   - every file the vault or a backend opens there (vault.db, vault.db.tmp,
//     soft.kek, tpm-parent.pub, audit.log) is opened with O_NOFOLLOW and
//     must be a regular file of the daemon's uid with one link and no
//     permission for group or others (OpenStateFile).

// ensurePrivateDir creates dir 0700 (checking first that nothing is created
// inside a tree someone else controls), or checks an existing one, and the
// entries in it.
func ensurePrivateDir(dir string) error {
	uid := uint32(os.Geteuid())
	if err := safepath.CheckDir(filepath.Dir(dir), uid, true); err != nil {
		return fmt.Errorf("%w: state dir %s: %w", ErrUnsafeState, dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: state dir %s is not a directory", ErrInvalid, dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Uid != uid {
		owner := -1
		if ok {
			owner = int(sys.Uid)
		}
		return fmt.Errorf("%w: state dir %s belongs to uid %d, not to this daemon's user (uid %d): whoever owns it can replace the vault and its keys (run the daemon as uid %d, or chown -R %d %s)", ErrUnsafeState, dir, owner, uid, owner, uid, dir)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: state dir %s has mode %04o; it must be 0700 (chmod 700 %s)", ErrInvalid, dir, st.Mode().Perm(), dir)
	}
	if err := safepath.CheckDir(dir, uid, false); err != nil {
		return fmt.Errorf("%w: state dir %s: %w", ErrUnsafeState, dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read state dir: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok && sys.Uid != uid && sys.Uid != 0 {
			return fmt.Errorf("%w: %s belongs to uid %d: only this daemon's user (uid %d) and root may own anything in the state dir (remove it, or chown %d it)", ErrUnsafeState, p, sys.Uid, uid, uid)
		}
	}
	return nil
}

// OpenStateFile opens a file in the vault's state directory under the rules
// above. Backends open their own files in the state directory with it.
func OpenStateFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := safepath.OpenFile(path, flag, perm, uint32(os.Geteuid()), safepath.FileRules{})
	if errors.Is(err, safepath.ErrUnsafe) {
		return nil, fmt.Errorf("%w: %w", ErrUnsafeState, err)
	}
	return f, err
}
