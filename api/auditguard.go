package api

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pskvault/pskvault/vault"
)

// What the server does with a request whose audit line cannot be written
// (Options.AuditFailure).
const (
	// AuditRefuse (the default): the request is refused with
	// 503 audit_unavailable. A derivation's key is wiped unsent; a change
	// on the admin socket is not made (its intent line comes first).
	AuditRefuse = "refuse"
	// AuditLogOnly: the request is answered anyway and the failure goes
	// to the daemon log (once when it starts failing, once when it
	// recovers). For hosts that rank availability over accountability.
	AuditLogOnly = "log"
)

// Defaults of the per-uid limit on audit lines of refused requests.
const (
	DefaultRefusedAuditRate  = 5  // lines a second, sustained
	DefaultRefusedAuditBurst = 20 // lines at once
	refusedSummaryEvery      = 10 * time.Second
)

// isChange reports whether a request changes the vault: a POST or DELETE
// on the admin socket other than the reads that use POST for their body
// (show, watch). The data socket's POSTs only derive.
func isChange(sock Socket, pattern string, r *http.Request) bool {
	return sock == SocketAdmin && r.Method != http.MethodGet && r.Method != http.MethodHead && !adminReads[pattern]
}

// adminReads are the admin endpoints that take a body but change nothing.
var adminReads = map[string]bool{"POST /v1/psks/show": true, "POST /v1/watch": true, "POST /v1/psks/list": true, "POST /v1/check": true}

// intentIdentity is the identity a change names in its path, hex, for its
// intent line; "" when it travels in the body, which is read later (the
// outcome line has it).
func intentIdentity(pattern string, r *http.Request) string {
	if !strings.Contains(pattern, "{id}") {
		return ""
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/psks/"), "/")
	if _, err := hex.DecodeString(id); err != nil {
		return ""
	}
	return strings.ToLower(id)
}

// writeAudit writes a request's line, subject to the per-uid limit on
// refused requests: a line over the limit is counted, not written, and the
// count goes out later as one summary line (summary). It reports the
// failure to write.
func (s *Server) writeAudit(ae *AuditEntry, caller *vault.Caller) error {
	if ae.Status >= 400 && caller != nil && !s.v.Access().IsTrusted(caller) {
		if !s.refused.allow(caller.UID, ae.Socket, ae.Time) {
			return nil
		}
		// Allowed again: say first what was left out since the last line.
		if err := s.summarize(caller.UID); err != nil {
			return err
		}
	}
	return s.auditResult(s.audit.Write(ae))
}

// auditResult notes in the daemon log when the audit log starts and stops
// failing (once each, never per request).
func (s *Server) auditResult(err error) error {
	if err != nil {
		s.metrics.auditFails.Inc()
		if s.auditBroken.CompareAndSwap(false, true) {
			what := "requests are refused with 503 audit_unavailable until it recovers (audit_failure = \"refuse\")"
			if s.opts.AuditFailure == AuditLogOnly {
				what = "requests are still answered (audit_failure = \"log\")"
			}
			s.log.Error("audit log not writable: "+what, "err", err)
		}
		return err
	}
	if s.auditBroken.CompareAndSwap(true, false) {
		s.log.Info("audit log writable again")
	}
	return nil
}

// summarize writes the summary line of uid's left-out lines, if any.
func (s *Server) summarize(uid uint32) error {
	sum, ok := s.refused.take(uid)
	if !ok {
		return nil
	}
	if err := s.auditResult(s.audit.Write(sum.entry(uid, s.refused.rate))); err != nil {
		s.refused.giveBack(uid, sum)
		return err
	}
	return nil
}

// flushRefused writes the summaries due, every refusedSummaryEvery, until
// ctx ends: a uid that stopped after a burst still gets its line.
func (s *Server) flushRefused(ctx context.Context) {
	t := time.NewTicker(refusedSummaryEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, uid := range s.refused.pending(time.Now()) {
			s.summarize(uid)
		}
	}
}

// refusalLimiter is a token bucket per uid for the audit lines of refused
// requests.
type refusalLimiter struct {
	rate, burst float64
	mu          sync.Mutex
	m           map[uint32]*refusalBucket
}

type refusalBucket struct {
	tokens float64
	last   time.Time
	left   refusalSummary
}

// refusalSummary is what was left out for one uid.
type refusalSummary struct {
	count  int
	since  time.Time
	socket string
}

func (sum refusalSummary) entry(uid uint32, rate float64) *AuditEntry {
	return &AuditEntry{
		Time: time.Now().UTC(), Socket: sum.socket, UID: &uid, Op: "refused-summary", Result: "rate_limited", Count: sum.count,
		Reason: fmt.Sprintf("%d refused requests from uid %d since %s not logged one by one (over %g lines a second)", sum.count, uid, sum.since.UTC().Format(time.RFC3339), rate),
	}
}

func newRefusalLimiter(rate, burst int) *refusalLimiter {
	return &refusalLimiter{rate: float64(rate), burst: float64(burst), m: map[uint32]*refusalBucket{}}
}

// allow takes a token from uid's bucket, or counts the line as left out.
func (l *refusalLimiter) allow(uid uint32, socket string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[uid]
	if b == nil {
		b = &refusalBucket{tokens: l.burst, last: now}
		l.m[uid] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	if b.left.count == 0 {
		b.left.since, b.left.socket = now, socket
	}
	b.left.count++
	return false
}

func (l *refusalLimiter) take(uid uint32) (refusalSummary, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[uid]
	if b == nil || b.left.count == 0 {
		return refusalSummary{}, false
	}
	sum := b.left
	b.left = refusalSummary{}
	return sum, true
}

func (l *refusalLimiter) giveBack(uid uint32, sum refusalSummary) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[uid]
	if b == nil {
		b = &refusalBucket{last: time.Now()}
		l.m[uid] = b
	}
	if b.left.count == 0 {
		b.left = sum
		return
	}
	b.left.count += sum.count
	if sum.since.Before(b.left.since) {
		b.left.since = sum.since
	}
}

// pending lists the uids with lines left out, and forgets the buckets that
// are full again with nothing left out.
func (l *refusalLimiter) pending(now time.Time) []uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []uint32
	for uid, b := range l.m {
		if b.left.count > 0 {
			out = append(out, uid)
		} else if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.m, uid)
		}
	}
	return out
}
