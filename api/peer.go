package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/pskvault/pskvault/vault"
)

// peerCred asks the kernel who is on the other end of a Unix socket:
// SO_PEERCRED for uid, gid and pid, SO_PEERGROUPS for the supplementary
// groups. Both are the credentials at connect time, which a client cannot
// forge.
func peerCred(c *net.UnixConn) (*vault.Caller, error) { return peerCredOpt(c, true) }

// peerCredOpt is peerCred, reading the groups only when groups is set (the
// accept loop leaves them to the connection's own goroutine: see
// peerConn.withGroups).
func peerCredOpt(c *net.UnixConn, groups bool) (*vault.Caller, error) {
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
		if groups {
			caller.Groups = peerGroups(int(fd))
		}
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
	idle    atomic.Bool // waiting for a request (the socket server sets it)

	groupsRead bool // caller.Groups is read (withGroups)
}

// withGroups is the caller with its supplementary groups, read on the
// first call (from the connection's goroutine, off the accept loop).
func (c *peerConn) withGroups() *vault.Caller {
	if !c.groupsRead {
		c.groupsRead = true
		if raw, err := c.UnixConn.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) { c.caller.Groups = peerGroups(int(fd)) })
		}
	}
	return c.caller
}

func (c *peerConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(c.release)
	return err
}

// limitListener accepts Unix connections, tags each with its caller, and
// shares the connections of a socket out fairly:
//
//   - max in all; the last reserved of them only for privileged callers
//     (root, the daemon's uid, and on the admin socket the admin group),
//     so that no crowd of local users can lock the operator out;
//   - perUID for any one unprivileged uid;
//   - when the unprivileged share is full, a newcomer whose uid holds fewer
//     connections than the uid holding the most takes the place of one of
//     that uid's idle connections (closed, as an idle timeout would), so
//     that a few users holding connections cannot starve one that has none.
//
// A connection refused is answered "503 too_many_connections" with a JSON
// body and closed, without delaying the accept loop; refusals are counted
// by reason (pskvault_refused_connections_total) and logged as one summary
// line at most every refusalLogEvery, never one per connection: the first
// refusal after a quiet spell at once, the rest of a flood when the period
// ends.
type limitListener struct {
	*net.UnixListener
	max, perUID, reserved int
	privileged            func(*vault.Caller) bool
	needGroups            bool // privileged looks at the caller's groups
	log                   *slog.Logger

	sock     Socket
	counters map[string]prometheus.Counter // by refusal reason (set by Serve)

	mu        sync.Mutex
	total     int // all connections
	shared    int // connections of unprivileged callers
	byUID     map[uint32]map[*peerConn]bool
	refused   int            // since the last summary
	byReason  map[string]int // since the last summary
	lastLog   time.Time
	flushing  bool // a summary is due at lastLog+refusalLogEvery
	refusedBy map[uint32]int
}

// refusalLogEvery spaces the summary lines of refused connections.
var refusalLogEvery = 10 * time.Second

func newLimitListener(l net.Listener, max, perUID int, privileged func(*vault.Caller) bool, needGroups bool, log *slog.Logger) (*limitListener, error) {
	ul, ok := l.(*net.UnixListener)
	if !ok {
		return nil, errors.New("api: the socket must be a Unix socket")
	}
	reserved := max / 8
	if reserved < 1 && max > 1 {
		reserved = 1
	}
	return &limitListener{UnixListener: ul, max: max, perUID: min(perUID, max-reserved), reserved: reserved, privileged: privileged, needGroups: needGroups, log: log,
		byUID: map[uint32]map[*peerConn]bool{}, refusedBy: map[uint32]int{}, byReason: map[string]int{}, counters: map[string]prometheus.Counter{}}, nil
}

// tooMany is the answer to a connection over the caps: a complete HTTP
// response, written before any request is read.
var tooMany = func() []byte {
	body := `{"code":"` + CodeTooManyConnections + `","message":"too many connections: the daemon's connection limit for this socket or this user is reached; retry later"}` + "\n"
	return []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n" + HeaderError + ": " + CodeTooManyConnections +
		"\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		// The groups matter to the caps only on the admin socket (the
		// admin group has the reserved connections there); elsewhere the
		// connection's goroutine reads them, which keeps this loop short.
		caller, err := peerCredOpt(c, l.needGroups)
		if err != nil {
			l.refuse(c, nil, refusedNoCreds)
			continue
		}
		pc := &peerConn{UnixConn: c, caller: caller, groupsRead: l.needGroups}
		pc.idle.Store(true)
		victim, reason := l.admit(pc)
		if victim != nil {
			victim.Close()
		}
		if reason != "" {
			l.refuse(c, caller, reason)
			continue
		}
		pc.release = func() { l.drop(pc) }
		return pc, nil
	}
}

// admit counts pc in, or says which cap it is over (refusedConnLimit,
// refusedUIDLimit). It may pick an idle connection of the heaviest
// unprivileged uid to make room (the caller closes it).
func (l *limitListener) admit(pc *peerConn) (victim *peerConn, refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	uid := pc.caller.UID
	priv := l.privileged(pc.caller)
	if l.total >= l.max {
		if !priv {
			return nil, refusedConnLimit
		}
		// Full, and the reserve is used up too: an unprivileged idle
		// connection makes room for the operator.
		if victim = l.idleOfHeaviest(^uint32(0), 0); victim == nil {
			return nil, refusedConnLimit
		}
		l.forget(victim)
	} else if !priv {
		mine := len(l.byUID[uid])
		if mine >= l.perUID {
			return nil, refusedUIDLimit
		}
		if l.shared >= l.max-l.reserved {
			if victim = l.idleOfHeaviest(uid, mine+1); victim == nil {
				return nil, refusedConnLimit
			}
			l.forget(victim)
		}
	}
	l.total++
	if !priv {
		l.shared++
	}
	m := l.byUID[uid]
	if m == nil {
		m = map[*peerConn]bool{}
		l.byUID[uid] = m
	}
	m[pc] = priv
	return victim, ""
}

// idleOfHeaviest finds an idle connection of the unprivileged uid (other
// than except) holding the most connections, at least atLeast of them.
func (l *limitListener) idleOfHeaviest(except uint32, atLeast int) *peerConn {
	var heaviest uint32
	most := 0
	for uid, m := range l.byUID {
		n := 0
		for _, priv := range m {
			if !priv {
				n++
			}
		}
		if uid != except && n > most {
			heaviest, most = uid, n
		}
	}
	if most == 0 || most < atLeast {
		return nil
	}
	for pc, priv := range l.byUID[heaviest] {
		if !priv && pc.idle.Load() {
			return pc
		}
	}
	return nil
}

// forget uncounts pc (under l.mu); its release then does nothing.
func (l *limitListener) forget(pc *peerConn) {
	m := l.byUID[pc.caller.UID]
	priv, ok := m[pc]
	if !ok {
		return
	}
	delete(m, pc)
	if len(m) == 0 {
		delete(l.byUID, pc.caller.UID)
	}
	l.total--
	if !priv {
		l.shared--
	}
}

func (l *limitListener) drop(pc *peerConn) {
	l.mu.Lock()
	l.forget(pc)
	l.mu.Unlock()
}

// refuse answers a connection over the caps and closes it. The answer fits
// the empty socket buffer of a new connection, so the write does not
// block; a short deadline makes sure of it.
func (l *limitListener) refuse(c *net.UnixConn, caller *vault.Caller, reason string) {
	c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	c.Write(tooMany)
	c.Close()
	if ctr := l.counters[reason]; ctr != nil {
		ctr.Inc()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refused++
	l.byReason[reason]++
	if caller != nil {
		l.refusedBy[caller.UID]++
	}
	if l.flushing {
		return
	}
	if now := time.Now(); now.Sub(l.lastLog) >= refusalLogEvery {
		l.logRefusals(now)
		return
	}
	// Logged a moment ago: what follows is summed up when the period
	// ends, in one line.
	l.flushing = true
	time.AfterFunc(time.Until(l.lastLog.Add(refusalLogEvery)), func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.flushing = false
		if l.refused > 0 {
			l.logRefusals(time.Now())
		}
	})
}

// logRefusals writes the summary line of the refusals counted since the
// last one (under l.mu).
func (l *limitListener) logRefusals(now time.Time) {
	var top uint32
	for uid, n := range l.refusedBy {
		if n > l.refusedBy[top] {
			top = uid
		}
	}
	period := refusalLogEvery
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < period {
		period = now.Sub(l.lastLog)
	}
	l.log.Warn(fmt.Sprintf("connections refused over the limits: %d in the last %s (summarized, at most one line every %s)", l.refused, period.Round(time.Second), refusalLogEvery),
		"socket", l.sock, "refused", l.refused, "conn_limit", l.byReason[refusedConnLimit], "uid_limit", l.byReason[refusedUIDLimit], "no_peer_credentials", l.byReason[refusedNoCreds],
		"top_uid", top, "top_uid_refused", l.refusedBy[top], "max", l.max, "per_uid", l.perUID, "reserved", l.reserved)
	l.refused, l.lastLog = 0, now
	clear(l.refusedBy)
	clear(l.byReason)
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
