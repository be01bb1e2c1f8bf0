package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pskvault/pskvault/vault"
)

// peerCred asks the kernel who is on the other end of a Unix socket:
// SO_PEERCRED for uid, gid and pid, SO_PEERGROUPS for the supplementary
// groups. Both are the credentials at connect time, which a client cannot
// forge.
func peerCred(c *net.UnixConn) (*vault.Caller, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var caller *vault.Caller
	var serr error
	err = raw.Control(func(fd uintptr) {
		uc, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			serr = err
			return
		}
		caller = &vault.Caller{UID: uc.Uid, GID: uc.Gid, PID: uc.Pid}
		caller.Groups = peerGroups(int(fd))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return caller, nil
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13+); nil when unavailable.
func peerGroups(fd int) []uint32 {
	buf := make([]uint32, 64)
	for range 3 {
		n := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch errno {
		case 0:
			return buf[:n/4]
		case unix.ERANGE:
			buf = make([]uint32, n/4+1)
		default:
			return nil
		}
	}
	return nil
}

// peerConn is an accepted connection with its caller.
type peerConn struct {
	*net.UnixConn
	caller  *vault.Caller
	release func()
	once    sync.Once
}

func (c *peerConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(c.release)
	return err
}

// limitListener accepts Unix connections, tags each with its caller, and
// caps connections in total and per uid: a connection over either cap is
// closed at once, so one local user cannot starve the others (root and the
// daemon's uid count against the total only).
type limitListener struct {
	*net.UnixListener
	max, perUID int
	exempt      func(*vault.Caller) bool
	log         *slog.Logger

	mu    sync.Mutex
	total int
	byUID map[uint32]int
}

func newLimitListener(l net.Listener, max, perUID int, exempt func(*vault.Caller) bool, log *slog.Logger) (*limitListener, error) {
	ul, ok := l.(*net.UnixListener)
	if !ok {
		return nil, errors.New("api: the socket must be a Unix socket")
	}
	return &limitListener{UnixListener: ul, max: max, perUID: perUID, exempt: exempt, log: log, byUID: map[uint32]int{}}, nil
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		caller, err := peerCred(c)
		if err != nil {
			l.log.Warn("dropping connection without peer credentials", "err", err)
			c.Close()
			continue
		}
		l.mu.Lock()
		over := l.total >= l.max || (!l.exempt(caller) && l.byUID[caller.UID] >= l.perUID)
		if !over {
			l.total++
			l.byUID[caller.UID]++
		}
		l.mu.Unlock()
		if over {
			l.log.Warn("connection limit reached, dropping connection", "uid", caller.UID, "pid", caller.PID)
			c.Close()
			continue
		}
		uid := caller.UID
		return &peerConn{UnixConn: c, caller: caller, release: func() {
			l.mu.Lock()
			l.total--
			if l.byUID[uid]--; l.byUID[uid] <= 0 {
				delete(l.byUID, uid)
			}
			l.mu.Unlock()
		}}, nil
	}
}

type ctxKey int

const (
	keyCaller ctxKey = iota
	keyAudit
	keySocket
	keyStopping
)

// unknownCaller stands for a connection whose peer credentials could not be
// read: it matches no uid, group or access entry, so it is refused
// everything (fail closed). The vault trusts only a nil caller, which means
// in-process; a request that came through a socket never has one.
var unknownCaller = &vault.Caller{UID: ^uint32(0), GID: ^uint32(0), PID: -1}

// callerOf is the kernel-reported caller of a request, or unknownCaller.
func callerOf(ctx context.Context) *vault.Caller {
	if c, _ := ctx.Value(keyCaller).(*vault.Caller); c != nil {
		return c
	}
	return unknownCaller
}
