package client

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// EnvDaemonUID names the environment variable that adds one trusted daemon
// uid (decimal) to the built-in ones: root, the caller's own uid and the
// system user pskvault.
const EnvDaemonUID = "PSKVAULT_DAEMON_UID"

// SystemUser is the account a packaged daemon runs as; when it exists its
// uid is trusted.
const SystemUser = "pskvault"

// ErrUntrustedDaemon reports that the process listening on the socket runs
// as a uid the client does not trust: nothing was sent to it. Match with
// errors.Is; the error is an *UntrustedDaemonError.
var ErrUntrustedDaemon = errors.New("untrusted daemon")

// ErrDaemonUID reports a malformed PSKVAULT_DAEMON_UID.
var ErrDaemonUID = errors.New("bad " + EnvDaemonUID)

// ErrNoSocket reports a client made without a socket path.
var ErrNoSocket = errors.New("no daemon socket path")

// UntrustedDaemonError names the socket and the uid found listening on it.
type UntrustedDaemonError struct {
	Socket string
	UID    uint32 // the listening process's uid, from SO_PEERCRED
	Self   uint32 // the caller's effective uid
}

func (e *UntrustedDaemonError) Error() string {
	who := ""
	if u, err := user.LookupId(strconv.FormatUint(uint64(e.UID), 10)); err == nil {
		who = " (" + u.Username + ")"
	}
	return fmt.Sprintf("refusing to talk to %s: the process listening there runs as uid %d%s, which is not root, you (uid %d), "+
		"the %s system user nor %s, so it may be another user who took the path; nothing was sent. "+
		"If uid %d really runs your daemon, set %s=%d; otherwise remove the socket and check who can write its directory",
		e.Socket, e.UID, who, e.Self, SystemUser, EnvDaemonUID, e.UID, EnvDaemonUID, e.UID)
}

func (e *UntrustedDaemonError) Unwrap() error { return ErrUntrustedDaemon }

// Option configures a Client.
type Option func(*Client)

// WithDaemonUID trusts a daemon running as uid besides root, the caller's
// own uid, the pskvault system user and PSKVAULT_DAEMON_UID. Repeatable.
func WithDaemonUID(uid uint32) Option {
	return func(c *Client) { c.trust.uids = append(c.trust.uids, uid) }
}

// trust decides whether the daemon behind a connection may be talked to.
type trust struct {
	uids []uint32 // configured: options and PSKVAULT_DAEMON_UID
	err  error    // a malformed PSKVAULT_DAEMON_UID: every request fails with it
}

func (t *trust) fromEnv() {
	s, ok := os.LookupEnv(EnvDaemonUID)
	if !ok || s == "" {
		return
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || n == 1<<32-1 {
		t.err = fmt.Errorf("%w: %q is not a decimal uid", ErrDaemonUID, s)
		return
	}
	t.uids = append(t.uids, uint32(n))
}

// systemUID is the uid of the system user pskvault, looked up once.
var systemUID = sync.OnceValues(func() (uint32, bool) {
	u, err := user.Lookup(SystemUser)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), err == nil
})

// trusted reports whether a daemon running as uid may be talked to: root,
// the caller's own effective uid, the pskvault system user, or a
// configured uid.
func (t *trust) trusted(uid uint32) bool {
	if uid == 0 || uid == uint32(os.Geteuid()) {
		return true
	}
	for _, u := range t.uids {
		if u == uid {
			return true
		}
	}
	if s, ok := systemUID(); ok && s == uid {
		return true
	}
	return false
}

// check reads SO_PEERCRED of a freshly connected socket (the credentials of
// the process that called listen(2): the daemon, or systemd for a socket it
// activates) and refuses an untrusted one before anything is written.
func (t *trust) check(socket string, c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("%s is not a Unix socket connection", socket)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("daemon credentials on %s: %w", socket, err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("daemon credentials on %s: %w", socket, err)
	}
	if cerr != nil {
		return fmt.Errorf("daemon credentials on %s: SO_PEERCRED: %w", socket, cerr)
	}
	if !t.trusted(cred.Uid) {
		return &UntrustedDaemonError{Socket: socket, UID: cred.Uid, Self: uint32(os.Geteuid())}
	}
	return nil
}
