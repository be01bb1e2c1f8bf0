package api

import (
	"bytes"
	"encoding/json"
	"io"
	"sync"
	"time"
)

// AuditEntry is one line of the audit log: who asked what, about which PSK,
// and what came of it. It never holds key bytes: identities are external
// identities (public, sent in clear in every ClientHello).
type AuditEntry struct {
	Time     time.Time `json:"time"`
	Socket   string    `json:"socket"` // "admin" or "data"
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
	Status   int       `json:"status"`
	Count    int       `json:"count,omitempty"` // keys handed out by offers
}

// Audit writes AuditEntry values as JSON lines. It is safe for concurrent use.
type Audit struct {
	mu sync.Mutex
	w  io.Writer
}

// NewAudit writes to w (a file opened O_APPEND, or stderr); nil w discards.
func NewAudit(w io.Writer) *Audit { return &Audit{w: w} }

// Write appends one line.
func (a *Audit) Write(e *AuditEntry) {
	if a == nil || a.w == nil {
		return
	}
	buf := auditBufs.Get().(*bytes.Buffer)
	defer func() {
		buf.Reset()
		if buf.Cap() <= 64<<10 {
			auditBufs.Put(buf)
		}
	}()
	if err := json.NewEncoder(buf).Encode(e); err != nil { // Encode adds the newline
		return
	}
	// One write(2) per line, unbuffered, before the response leaves: a line
	// is in the kernel's hands before the caller sees its answer, and a
	// crash of the daemon loses none.
	a.mu.Lock()
	a.w.Write(buf.Bytes())
	a.mu.Unlock()
}

var auditBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}
