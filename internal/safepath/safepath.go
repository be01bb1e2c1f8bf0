// Package safepath checks that no one but root and the daemon's own user can
// change what a path names, the way OpenSSH's StrictModes checks ~/.ssh
// (misc.c, safe_path), but from / down: the daemon's sockets and its state
// directory are only as private as the least private directory above them,
// since whoever can write a directory can rename an entry of it away and
// put a tree of his own in its place.
//
// The rule, for every component from / to the path itself:
//
//   - it is owned by root or by the daemon's uid;
//   - it is not writable by group or others, unless it has the sticky bit
//     (like /tmp). That exception is safe at any depth because the next
//     component is checked too: in a sticky directory only an entry's owner,
//     the directory's owner and root can rename or remove the entry, and
//     both owners are root or the daemon (the first rule). Another user can
//     only create new names there, and a name he created first is his, which
//     the first rule refuses when the walk reaches it. The path itself is
//     checked the same way; callers that keep files in it (the state
//     directory, a socket's directory) ask for more (mode 0700 or 0755);
//   - a symbolic link is owned by root or the daemon's uid (with
//     fs.protected_symlinks an other user's link in a sticky directory is not
//     followed anyway), and the walk continues through its target, which
//     meets the same rules.
//
// Group write is refused even for the daemon's own group, as OpenSSH does.
// POSIX ACLs that grant write to a named user or group show in the group
// bits (the ACL mask), so they are refused too. The checks hold once made:
// only root and the daemon could change any component afterwards.
package safepath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUnsafe reports a path another user could change.
var ErrUnsafe = errors.New("path not private")

// maxLinks bounds symbolic links followed in one check (Linux's own limit).
const maxLinks = 40

// CheckDir checks dir and every directory above it for the daemon of uid.
// A missing component ends the check without error when allowMissing (the
// caller creates the rest, then checks again).
func CheckDir(dir string, uid uint32, allowMissing bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	rest := components(abs)
	cur := "/"
	if err := checkComponent(cur, uid); err != nil {
		return err
	}
	for links := 0; len(rest) > 0; {
		next := filepath.Join(cur, rest[0])
		rest = rest[1:]
		st, err := os.Lstat(next)
		if err != nil {
			if allowMissing && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("%w: %w", ErrUnsafe, err)
		}
		if err := checkOwner(next, st, uid); err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			if links++; links > maxLinks {
				return fmt.Errorf("%w: %s: too many levels of symbolic links", ErrUnsafe, abs)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrUnsafe, err)
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			// Start again from / through the target.
			rest = append(components(filepath.Clean(target)), rest...)
			cur = "/"
			continue
		}
		if err := checkMode(next, st); err != nil {
			return err
		}
		cur = next
	}
	return nil
}

func components(abs string) []string {
	var out []string
	for _, c := range strings.Split(abs, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

func checkComponent(p string, uid uint32) error {
	st, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnsafe, err)
	}
	if err := checkOwner(p, st, uid); err != nil {
		return err
	}
	return checkMode(p, st)
}

func checkOwner(p string, st fs.FileInfo, uid uint32) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: %s: no owner information", ErrUnsafe, p)
	}
	if sys.Uid != 0 && sys.Uid != uid {
		return fmt.Errorf("%w: %s belongs to uid %d, not to root or this daemon's user (uid %d): that user could replace everything below it", ErrUnsafe, p, sys.Uid, uid)
	}
	return nil
}

func checkMode(p string, st fs.FileInfo) error {
	if !st.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrUnsafe, p)
	}
	if st.Mode().Perm()&0o022 != 0 && st.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("%w: %s is writable by group or others (mode %04o) without the sticky bit: they could replace everything below it (chmod go-w %s)", ErrUnsafe, p, st.Mode().Perm(), p)
	}
	return nil
}

// File rules for OpenFile.
type FileRules struct {
	// GroupReadable allows the group read bit (an audit log an operator
	// opened to a log group); every other bit for group and others is
	// refused regardless.
	GroupReadable bool
}

// OpenFile opens a file the daemon keeps for itself (vault.db, soft.kek,
// the audit log, ...) so that nothing someone else planted is used: the
// last component is never followed if it is a symbolic link (O_NOFOLLOW),
// and the opened file must be a regular file owned by uid with one link and
// no permission bits for group or others (bar group read, with
// rules.GroupReadable). A FIFO or device is refused before it is opened,
// so that opening it cannot block. Errors wrap ErrUnsafe and name the path.
// The directory's own safety is the caller's: CheckDir.
func OpenFile(path string, flag int, perm os.FileMode, uid uint32, rules FileRules) (*os.File, error) {
	if st, err := os.Lstat(path); err == nil {
		if err := checkFile(path, st, uid, rules); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symbolic link: refusing to follow it", ErrUnsafe, path)
		}
		return nil, err
	}
	st, err := f.Stat()
	if err == nil {
		err = checkFile(path, st, uid, rules)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// CheckFile applies OpenFile's rules to path without opening it (Lstat).
func CheckFile(path string, uid uint32, rules FileRules) error {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	return checkFile(path, st, uid, rules)
}

func checkFile(path string, st fs.FileInfo, uid uint32, rules FileRules) error {
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symbolic link: refusing to follow it", ErrUnsafe, path)
	case !st.Mode().IsRegular():
		return fmt.Errorf("%w: %s is not a regular file (%s)", ErrUnsafe, path, typeName(st.Mode()))
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: %s: no owner information", ErrUnsafe, path)
	}
	if sys.Uid != uid {
		return fmt.Errorf("%w: %s belongs to uid %d, not to this daemon's user (uid %d)", ErrUnsafe, path, sys.Uid, uid)
	}
	if sys.Nlink > 1 {
		return fmt.Errorf("%w: %s has %d hard links: another name elsewhere reaches the same file (keep a copy instead of a link)", ErrUnsafe, path, sys.Nlink)
	}
	bad := os.FileMode(0o077)
	if rules.GroupReadable {
		bad = 0o037
	}
	if st.Mode().Perm()&bad != 0 {
		return fmt.Errorf("%w: %s has mode %04o: group and others must have no access (chmod go-rwx %s)", ErrUnsafe, path, st.Mode().Perm(), path)
	}
	return nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return m.Type().String()
}
