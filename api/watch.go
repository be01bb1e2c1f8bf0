package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/pskvault/pskvault/vault"
)

// watchers bounds long-polls and holds the key that makes tokens opaque.
type watchers struct {
	key    [32]byte // per process: tokens mean nothing to another daemon or run
	mu     sync.Mutex
	total  int
	perUID map[uint32]int
}

func newWatchers() *watchers {
	w := &watchers{perUID: map[uint32]int{}}
	if _, err := rand.Read(w.key[:]); err != nil {
		panic("pskvault: no randomness for the watch key: " + err.Error())
	}
	return w
}

// acquire counts one more watch for uid, or refuses it over the caps.
func (w *watchers) acquire(uid uint32, total, perUID int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.total >= total || w.perUID[uid] >= perUID {
		return false
	}
	w.total++
	w.perUID[uid]++
	return true
}

func (w *watchers) release(uid uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.total--
	if w.perUID[uid]--; w.perUID[uid] <= 0 {
		delete(w.perUID, uid)
	}
}

// token is the caller's opaque name for its view: an HMAC under the
// process's watch key of the caller's credentials and the view's digest,
// so two callers with the same view get unrelated tokens and a token says
// nothing about any PSK.
func (w *watchers) token(c *vault.Caller, digest [32]byte) string {
	m := hmac.New(sha256.New, w.key[:])
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], c.UID)
	binary.BigEndian.PutUint32(b[4:], c.GID)
	m.Write(b[:])
	for _, g := range c.Groups {
		binary.BigEndian.PutUint32(b[:4], g)
		m.Write(b[:4])
	}
	m.Write(digest[:])
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// parseWatch reads a watch request body.
func parseWatch(r *http.Request) (since string, wait time.Duration, err error) {
	var req WatchRequest
	if err := decodeJSON(r, &req); err != nil {
		return "", 0, err
	}
	if len(req.Since) > 64 {
		return "", 0, badRequest("since: not a token this daemon gave")
	}
	wait = DefaultWatchWait
	if req.WaitSeconds != nil {
		n := *req.WaitSeconds
		if n < 0 || n > int(MaxWatchWait/time.Second) {
			return "", 0, badRequest("wait_seconds: want whole seconds from 0 to %d", int(MaxWatchWait/time.Second))
		}
		wait = time.Duration(n) * time.Second
	}
	return req.Since, wait, nil
}

// watch is the long-poll of consumers that keep files or caches of keys
// (pskvault agent): it answers as soon as the caller's view (the PSKs it
// may derive now, and their policy) differs from the one named by since,
// or when wait ends, with the view's current token. It wakes on every
// change of the vault and at the next not-after of a PSK in the view,
// recomputes the caller's view and answers only when that changed, so a
// caller learns nothing of changes to PSKs it may not derive, not even
// that one happened: its answer comes at the same instant (the end of its
// wait) whatever they do.
func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	since, wait, err := parseWatch(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	caller := callerOf(r.Context())
	if !s.watchers.acquire(caller.UID, s.opts.MaxWatches, s.opts.MaxWatchesPerUID) {
		auditOf(r).Reason = "over the watch caps"
		writeError(w, http.StatusTooManyRequests, CodeTooManyWatches, fmt.Sprintf("too many watches (at most %d per uid, %d in all): share one", s.opts.MaxWatchesPerUID, s.opts.MaxWatches))
		return
	}
	defer s.watchers.release(caller.UID)
	stopping, _ := r.Context().Value(keyStopping).(<-chan struct{})
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	var boundary *time.Timer
	defer func() {
		if boundary != nil {
			boundary.Stop()
		}
	}()
	for {
		changed := s.v.Changed() // before the view: a change in between wakes us
		digest, next, err := s.v.View(caller)
		if err != nil {
			s.fail(w, err)
			return
		}
		tok := s.watchers.token(caller, digest)
		if since == "" || tok != since {
			writeJSON(w, http.StatusOK, WatchResponse{Token: tok, Changed: since != "" && tok != since})
			return
		}
		var atBoundary <-chan time.Time
		if boundary != nil {
			boundary.Stop()
			boundary = nil
		}
		if !next.IsZero() {
			boundary = time.NewTimer(max(time.Until(next), 0))
			atBoundary = boundary.C
		}
		select {
		case <-changed:
		case <-atBoundary:
		case <-deadline.C:
			writeJSON(w, http.StatusOK, WatchResponse{Token: tok})
			return
		case <-stopping:
			writeJSON(w, http.StatusOK, WatchResponse{Token: tok})
			return
		case <-r.Context().Done():
			return
		}
	}
}

// stoppingContext carries the channel closed when the socket server
// shuts down, which ends every watch at once.
func stoppingContext(ctx context.Context, stopping <-chan struct{}) context.Context {
	return context.WithValue(ctx, keyStopping, stopping)
}
