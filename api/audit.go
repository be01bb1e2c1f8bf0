package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/pskvault/pskvault/internal/safepath"
)

// AuditEntry is one line of the audit log: who asked what, about which PSK,
// and what came of it. It never holds key bytes: identities are external
// identities (public, sent in clear in every ClientHello).
type AuditEntry struct {
	Time     time.Time `json:"time"`
	Socket   string    `json:"socket"` // "admin" or "data"; "signal" for a reload (SIGHUP)
	UID      *uint32   `json:"uid"`    // null for an in-process caller
	GID      *uint32   `json:"gid"`
	PID      *int32    `json:"pid"`
	Op       string    `json:"op"`                 // derive, lookup, offers, create, import, delete, ...
	Identity string    `json:"identity,omitempty"` // external identity, hex
	Target   string    `json:"target,omitempty"`   // e.g. tls1.3/sha256
	Context  string    `json:"context,omitempty"`  // RFC 9258 context, hex (public)
	Role     string    `json:"role,omitempty"`
	Result   string    `json:"result"`           // ok, denied, not_found, forbidden, or an error code
	Reason   string    `json:"reason,omitempty"` // why a request was refused, for the operator
	Status   int       `json:"status,omitempty"` // 0 (left out) for a reload
	Count    int       `json:"count,omitempty"`  // keys handed out by offers; refused requests a refused-summary line stands for
	// Request pairs the two lines of a change on the admin socket: its
	// intent ("result":"started"), written before the change is made,
	// and its outcome.
	Request uint64 `json:"request,omitempty"`

	// For the metrics (never written): whether the request is a
	// derivation (derive, lookup), and its result (metrics.go).
	derive bool
	result string
}

// Audit writes AuditEntry values as JSON lines. It is safe for concurrent use.
type Audit struct {
	mu sync.Mutex
	w  io.Writer
	f  *os.File // the file w writes to when the Audit opened it; closed when replaced
}

// NewAudit writes to w (a file opened O_APPEND, or stderr); nil w discards.
func NewAudit(w io.Writer) *Audit { return &Audit{w: w} }

// OpenAudit appends to the file at path, created 0600 when missing and
// opened O_APPEND, so that every line lands whole at the end of the file.
func OpenAudit(path string) (*Audit, error) {
	f, err := openAuditFile(path)
	if err != nil {
		return nil, err
	}
	return &Audit{w: f, f: f}, nil
}

// openAuditFile opens the audit log as the daemon opens its state files
// (issue 11 item 2): no symbolic link followed, and only a regular file of
// the daemon's user with one link, writable by nobody else (group read is
// allowed, for a log group). A link planted where the log goes would
// otherwise have the daemon append to, or create, a file of someone
// else's choosing.
func openAuditFile(path string) (*os.File, error) {
	return safepath.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600, uint32(os.Geteuid()), safepath.FileRules{GroupReadable: true})
}

// Reopen opens the file at path anew and makes the log append to it: after
// logrotate renamed the file, the next lines go to a new file at the old
// path, and none is lost or split between the two, because the swap is made
// under the lock every line is written under. The file written before
// (when the Audit opened it) is closed. On error nothing changes.
func (a *Audit) Reopen(path string) error {
	f, err := openAuditFile(path)
	if err != nil {
		return err
	}
	a.swap(f, f)
	return nil
}

// Redirect makes the log write to w (stderr, say) instead, closing the file
// written before when the Audit opened it.
func (a *Audit) Redirect(w io.Writer) { a.swap(w, nil) }

func (a *Audit) swap(w io.Writer, f *os.File) {
	a.mu.Lock()
	old := a.f
	a.w, a.f = w, f
	a.mu.Unlock()
	if old != nil && old != f {
		old.Close() // every write to it has returned: they hold a.mu
	}
}

// Close closes the file the Audit opened; later lines are discarded.
func (a *Audit) Close() error {
	a.mu.Lock()
	f := a.f
	a.w, a.f = nil, nil
	a.mu.Unlock()
	if f != nil {
		return f.Close()
	}
	return nil
}

// ErrAudit wraps a failure to write an audit line.
var ErrAudit = errors.New("audit log write failed")

// Write appends one line. It returns an error wrapping ErrAudit when the
// line could not be written whole; a partial line (a file system that
// filled up mid-write) is cut off again, so the file never holds a torn
// line. A nil Audit, or one whose writer is nil, discards and succeeds.
func (a *Audit) Write(e *AuditEntry) error {
	if a == nil {
		return nil
	}
	buf := auditBufs.Get().(*bytes.Buffer)
	defer func() {
		buf.Reset()
		if buf.Cap() <= 64<<10 {
			auditBufs.Put(buf)
		}
	}()
	if err := json.NewEncoder(buf).Encode(e); err != nil { // Encode adds the newline
		return fmt.Errorf("%w: %w", ErrAudit, err)
	}
	// One write(2) per line, unbuffered, before the response leaves: a line
	// is in the kernel's hands before the caller sees its answer, and a
	// crash of the daemon loses none.
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.w == nil {
		return nil
	}
	n, err := a.w.Write(buf.Bytes())
	if err == nil && n == buf.Len() {
		return nil
	}
	if err == nil {
		err = io.ErrShortWrite
	}
	if n > 0 && a.f != nil {
		// O_APPEND put the n bytes at the end: take them back. Lines are
		// written under a.mu, so the end is still this line's.
		if fi, serr := a.f.Stat(); serr == nil && fi.Size() >= int64(n) {
			if terr := a.f.Truncate(fi.Size() - int64(n)); terr != nil {
				err = errors.Join(err, fmt.Errorf("cut off the partial line: %w", terr))
			}
		}
	}
	return fmt.Errorf("%w: %w", ErrAudit, err)
}

var auditBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}
