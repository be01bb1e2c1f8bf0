package api

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pskvault/pskvault/api/wire"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// Socket names the two sockets a daemon serves.
type Socket string

// The data socket is for TLS stacks: derive, lookup, offers and status,
// each derivation checked against the access lists. The admin socket is for
// operators (root, the daemon's uid, the admin group) and serves everything.
const (
	SocketAdmin Socket = "admin"
	SocketData  Socket = "data"
)

// Options configure a Server beyond its vault.
type Options struct {
	Log    *slog.Logger
	Audit  *Audit        // nil: no audit log
	Access *vault.Access // nil: vault.DefaultAccess(the daemon's uid)
	// AdminGroup, when set, lets members of this group use the admin socket
	// besides root and the daemon's uid.
	AdminGroup *uint32
	// MaxConns caps open connections per socket (default 128); MaxConnsPerUID
	// caps them per caller uid other than root and the daemon's (default 16).
	MaxConns, MaxConnsPerUID int
	// MaxWatches caps the long-polls of POST /v1/watch held at once
	// (default 64), MaxWatchesPerUID those of one uid (default 4), so
	// watches never take all of a caller's connections.
	MaxWatches, MaxWatchesPerUID int
	// RequestTimeout bounds the work on each request (default
	// DefaultRequestTimeout): a backend that has not answered by then
	// gets the request 503 backend_unavailable, and later requests fail at
	// once until the late call returns (vault's backend guard).
	RequestTimeout time.Duration
	// AuditFailure is AuditRefuse ("" means it) or AuditLogOnly: what
	// happens to a request whose audit line cannot be written.
	AuditFailure string
	// RefusedAuditRate and RefusedAuditBurst limit the audit lines of
	// refused requests per caller uid (root and the daemon's exempt);
	// what is over the limit is summed up in one "refused-summary" line.
	// Defaults: DefaultRefusedAuditRate, DefaultRefusedAuditBurst.
	RefusedAuditRate, RefusedAuditBurst int
}

// Server answers the socket protocol for one vault.
type Server struct {
	v     *vault.Vault
	log   *slog.Logger
	audit *Audit
	opts  Options
	mux   *http.ServeMux

	watchers    *watchers       // POST /v1/watch (watch.go)
	refused     *refusalLimiter // audit lines of refused requests, per uid
	auditBroken atomic.Bool     // the last audit write failed
	changeSeq   atomic.Uint64   // pairs a change's intent and outcome lines
	flushOnce   sync.Once
	metrics     *metrics    // Prometheus collectors (metrics.go)
	probe       healthCache // the last backend probe (metrics.go)
}

// dataRoutes are the endpoints the data socket serves.
var dataRoutes = map[string]bool{
	"GET /v1/status":  true,
	"GET /v1/health":  true,
	"POST /v1/derive": true,
	"POST /v1/lookup": true,
	"POST /v1/offers": true,
	"POST /v1/watch":  true,
	"POST /v1/keys":   true,
}

// NewServer returns a server for v. log receives a line per admin change
// and per internal error at info, every other request at debug (the audit
// log records them), and never any key material.
func NewServer(v *vault.Vault, log *slog.Logger) *Server {
	return NewServerWith(v, Options{Log: log})
}

// NewServerWith returns a server for v configured by o.
func NewServerWith(v *vault.Vault, o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Access != nil {
		v.SetAccess(o.Access) // the vault enforces it on every derivation
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 128
	}
	if o.MaxConnsPerUID <= 0 {
		o.MaxConnsPerUID = 16
	}
	if o.MaxWatches <= 0 {
		o.MaxWatches = 64
	}
	if o.MaxWatchesPerUID <= 0 {
		o.MaxWatchesPerUID = 4
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.RefusedAuditRate <= 0 {
		o.RefusedAuditRate = DefaultRefusedAuditRate
	}
	if o.RefusedAuditBurst <= 0 {
		o.RefusedAuditBurst = DefaultRefusedAuditBurst
	}
	s := &Server{v: v, log: o.Log, audit: o.Audit, opts: o, mux: http.NewServeMux(), watchers: newWatchers(), refused: newRefusalLimiter(o.RefusedAuditRate, o.RefusedAuditBurst)}
	s.mux.HandleFunc("GET /v1/status", s.status)
	s.mux.HandleFunc("GET /v1/psks", s.list)
	s.mux.HandleFunc("POST /v1/psks/show", s.show)
	s.mux.HandleFunc("POST /v1/psks/delete", s.delete)
	s.mux.HandleFunc("POST /v1/psks/import", s.importPSK)
	s.mux.HandleFunc("POST /v1/psks/create", s.createPSK)
	s.mux.HandleFunc("POST /v1/derive", s.derive)
	s.policyRoutes()
	s.batchRoutes()
	s.mux.HandleFunc("POST /v1/lookup", s.lookup)
	s.mux.HandleFunc("POST /v1/offers", s.offers)
	s.mux.HandleFunc("POST /v1/watch", s.watch)
	s.mux.HandleFunc("POST /v1/keys", s.keys)
	s.mux.HandleFunc("GET /v1/health", s.health)
	s.metrics = newMetrics(s)
	s.mux.Handle("GET /metrics", s.metricsHandler())
	return s
}

// connContext is the context of every request on connection c of socket
// sock: the socket's name and the caller the kernel reported (SO_PEERCRED).
func (s *Server) connContext(ctx context.Context, sock Socket, c net.Conn) context.Context {
	ctx = context.WithValue(ctx, keySocket, sock)
	switch c := c.(type) {
	case *peerConn:
		return context.WithValue(ctx, keyCaller, c.withGroups())
	case *net.UnixConn:
		if caller, err := peerCred(c); err == nil {
			return context.WithValue(ctx, keyCaller, caller)
		}
	}
	return ctx
}

// Serve serves one socket on l until the returned server is shut down,
// capping connections in total and per uid. The channel receives Serve's
// end: http.ErrServerClosed after Shutdown or Close, else the error that
// stopped it.
func (s *Server) Serve(l net.Listener, sock Socket) (*SocketServer, <-chan error, error) {
	// Privileged callers have the reserved connections: root and the
	// daemon's uid, and on the admin socket the admin group. (Looked up
	// per connection: a reload swaps the access lists.)
	privileged := func(c *vault.Caller) bool { return s.v.Access().IsTrusted(c) }
	if sock == SocketAdmin {
		privileged = s.isAdmin
	}
	ll, err := newLimitListener(l, s.opts.MaxConns, s.opts.MaxConnsPerUID, privileged, sock == SocketAdmin && s.opts.AdminGroup != nil, s.log)
	if err != nil {
		return nil, nil, err
	}
	ll.sock = sock
	for _, r := range refusalReasons {
		ll.counters[r] = s.metrics.refusedCounter(sock, r)
	}
	ss := newSocketServer(s, sock, ll)
	s.flushOnce.Do(func() { go s.flushRefused(ss.base) })
	errc := make(chan error, 1)
	go func() { errc <- ss.serveAll(acceptors) }()
	return ss, errc, nil
}

// isAdmin reports whether the caller may use the admin socket.
func (s *Server) isAdmin(c *vault.Caller) bool {
	if c == nil {
		return false
	}
	if s.v.Access().IsTrusted(c) {
		return true
	}
	return s.opts.AdminGroup != nil && c.InGroup(*s.opts.AdminGroup)
}

type statusRecorder struct {
	http.ResponseWriter
	code    int
	errCode string
	sock    Socket
}

func (r *statusRecorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }

// ServeHTTP serves one request, bounded to MaxBody, checks the caller may
// use this socket and endpoint, logs it and writes its audit line.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// The answer is collected whole before it is sent (the socket server's
	// writer does that anyway), so that a request whose audit line fails
	// can still be refused and its key wiped unsent.
	rw, collected := w.(*responseWriter)
	if !collected {
		rw = &responseWriter{header: http.Header{}}
		defer rw.copyTo(w)
	}
	rec := &statusRecorder{ResponseWriter: rw, code: http.StatusOK}
	_, pattern := s.mux.Handler(r)
	limit := int64(MaxBody)
	if pattern == patternBatch {
		limit = MaxBatchBody // read entry by entry, never held whole
	}
	r.Body = http.MaxBytesReader(rec, r.Body, limit)
	sock, _ := r.Context().Value(keySocket).(Socket)
	if sock == "" {
		sock = SocketAdmin
	}
	rec.sock = sock
	caller := callerOf(r.Context())
	// A watch is a long-poll, bounded by its own wait; a batch import
	// bounds each entry by RequestTimeout instead (vault.ImportBatch).
	if pattern != "POST /v1/watch" && pattern != patternBatch {
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	ae := &AuditEntry{Socket: string(sock), Op: opName(pattern, r)}
	endpoint := ae.Op
	if pattern == "" || (sock == SocketData && !dataRoutes[pattern]) {
		endpoint = "other"
	}
	ae.derive = endpoint == "derive" || endpoint == "lookup"
	if caller != nil {
		ae.UID, ae.GID, ae.PID = &caller.UID, &caller.GID, &caller.PID
	}
	r = r.WithContext(context.WithValue(r.Context(), keyAudit, ae))
	change := false // an admin change, made or not: its intent line was written
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p))
			rw.reset()
			writeError(rec, http.StatusInternalServerError, CodeInternal, "internal error")
		}
		if ae.Op == "health" || (ae.Op == "metrics" && rec.code < 400) {
			ae.Op = "" // probes and scrapes hand out nothing: not audited
		}
		if ae.Op != "" {
			ae.Time, ae.Status = time.Now().UTC(), rec.code
			if ae.Result == "" {
				ae.Result = "ok"
				if rec.code >= 300 {
					ae.Result = rec.errCode
				}
			}
			err := s.writeAudit(ae, caller)
			switch {
			case err == nil, s.opts.AuditFailure == AuditLogOnly:
			case change:
				// Made (or refused) with its intent line on record: the
				// caller must learn the real outcome (a created key is
				// in this answer).
				s.log.Error("audit: the outcome line of a change could not be written; its intent line was", "op", ae.Op, "request", ae.Request, "status", rec.code)
			case ae.Op == "status":
				// Monitoring keeps working; it hands out nothing.
			default:
				rw.reset() // wipes a derived key unsent
				writeError(rec, http.StatusServiceUnavailable, CodeAuditUnavailable, "the audit log cannot be written, so nothing is handed out (see the daemon log)")
			}
		}
		took := time.Since(start)
		if ae.derive {
			result := ae.result
			if result == "" || (result == resultOK && rec.code >= 300) {
				result = resultOfCode(rec.code, rec.errCode)
			}
			role := ae.Role
			if role == "" {
				role = "none"
			}
			s.metrics.countDerive(result, role)
		}
		s.metrics.observeRequest(sock, endpoint, took)
		// One line per request, and only where the audit log does not
		// have it already: admin changes (made or refused) and internal
		// errors at info, everything else at debug. At thousands per
		// second an info line cost more than the derivation, and a local
		// user flooding the socket with refused requests must not flood
		// the log (the audit line above records every request whatever
		// the log level, rate-limited for refused ones).
		lvl := slog.LevelDebug
		if change || rec.code == http.StatusInternalServerError {
			lvl = slog.LevelInfo
		}
		if s.log.Enabled(r.Context(), lvl) {
			s.log.Log(r.Context(), lvl, "request", "socket", sock, "method", r.Method, "path", r.URL.Path, "status", rec.code, "duration", took)
		}
	}()
	switch {
	case pattern == "" || (sock == SocketData && !dataRoutes[pattern]):
		ae.Op = ""
		writeError(rec, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no endpoint %s %s on the %s socket (see docs/API.md)", r.Method, r.URL.Path, sock))
		return
	case r.URL.RawQuery != "":
		writeError(rec, http.StatusBadRequest, CodeBadRequest, "query parameters are not used: identities, contexts and every other field go in the request body (docs/API.md)")
		return
	case caller == unknownCaller:
		s.metrics.refusedCounter(sock, refusedNoCreds).Inc()
		ae.Reason = "no peer credentials"
		writeError(rec, http.StatusForbidden, CodeForbidden, "caller unknown: connect over the daemon's Unix socket")
		return
	case sock == SocketAdmin && !s.isAdmin(caller):
		s.metrics.refusedCounter(sock, refusedNotAdmin).Inc()
		ae.Reason = "not root, the daemon's user or in the admin group"
		writeError(rec, http.StatusForbidden, CodeForbidden, "the admin socket is for root, the daemon's user and the admin group")
		return
	}
	if isChange(sock, pattern, r) && ae.Op != "" {
		// Write-ahead: a change is made only once its intent is on record.
		ae.Request = s.changeSeq.Add(1)
		intent := *ae
		intent.Time, intent.Result, intent.Identity = time.Now().UTC(), "started", intentIdentity(pattern, r)
		if err := s.auditResult(s.audit.Write(&intent)); err != nil && s.opts.AuditFailure != AuditLogOnly {
			ae.Reason = "audit log not writable"
			writeError(rec, http.StatusServiceUnavailable, CodeAuditUnavailable, "the audit log cannot be written, so nothing was changed (see the daemon log)")
			return
		}
		change = true
	}
	s.mux.ServeHTTP(rec, r)
}

// opName names an endpoint in the audit log; "" for requests not audited.
func opName(pattern string, r *http.Request) string {
	switch pattern {
	case "":
		return ""
	case "GET /v1/status":
		return "status"
	case "GET /v1/psks":
		return "list"
	case "GET /metrics":
		return "metrics"
	}
	if _, rest, ok := strings.Cut(pattern, "/v1/"); ok {
		return strings.ReplaceAll(strings.TrimPrefix(rest, "psks/"), "/", "-")
	}
	return pattern
}

// auditOf is the audit entry of the request being served.
func auditOf(r *http.Request) *AuditEntry {
	if ae, ok := r.Context().Value(keyAudit).(*AuditEntry); ok {
		return ae
	}
	return &AuditEntry{}
}

// jsonBufs recycles response buffers; writeJSON wipes each before putting
// it back, since a derive response holds a derived key.
var jsonBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func writeJSON(w http.ResponseWriter, code int, v any) {
	buf := jsonBufs.Get().(*bytes.Buffer)
	defer func() {
		clear(buf.Bytes()[:buf.Cap()])
		buf.Reset()
		if buf.Cap() <= 64<<10 {
			jsonBufs.Put(buf)
		}
	}()
	if err := json.NewEncoder(buf).Encode(v); err != nil { // Encode adds the newline
		writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	b, _ := json.Marshal(Error{Code: errCode, Message: msg})
	if rec, ok := w.(*statusRecorder); ok {
		rec.errCode = errCode
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set(HeaderError, errCode)
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// errorStatus maps an error to an HTTP status and a stable code. Vault and
// importer errors carry no key material, so their text is safe to return;
// anything unrecognised is logged and answered with a generic message.
func (s *Server) fail(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	type m struct {
		target error
		status int
		code   string
	}
	table := []m{
		{importer.ErrIdentityTooLong, http.StatusBadRequest, CodeIdentityTooLong},
		{vault.ErrNotFound, http.StatusNotFound, CodeNotFound},
		{vault.ErrExists, http.StatusConflict, CodeExists},
		{vault.ErrKeyTooShort, http.StatusBadRequest, CodeKeyTooShort},
		{vault.ErrSameNode, http.StatusBadRequest, CodeSameNode},
		{vault.ErrNotParty, http.StatusForbidden, CodeNotParty},
		{vault.ErrRevoked, http.StatusForbidden, CodeRevoked},
		{vault.ErrExpired, http.StatusForbidden, CodeExpired},
		{vault.ErrTargetNotAllowed, http.StatusForbidden, CodeTargetNotAllowed},
		{vault.ErrKeyPolicy, http.StatusForbidden, CodeKeyPolicy},
		{importer.ErrLegacyProtocol, http.StatusBadRequest, CodeLegacyProtocol},
		{importer.ErrUnknownProtocol, http.StatusBadRequest, CodeUnknownProtocol},
		{importer.ErrUnknownKDF, http.StatusBadRequest, CodeUnknownKDF},
		{importer.ErrUnknownHash, http.StatusBadRequest, CodeUnknownHash},
		{hex.ErrLength, http.StatusBadRequest, CodeBadHex},
		{vault.ErrUnsupported, http.StatusBadRequest, CodeUnsupported},
		{vault.ErrBackendUnavailable, http.StatusServiceUnavailable, CodeUnavailable},
		{vault.ErrKeyNotFound, http.StatusGone, CodeKeyMissing},
		{vault.ErrInvalid, http.StatusBadRequest, CodeBadRequest},
		{importer.ErrMalformedIdentity, http.StatusBadRequest, CodeBadRequest},
		{errBadRequest, http.StatusBadRequest, CodeBadRequest},
	}
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("request body over %d bytes", mbe.Limit))
		return
	}
	var hexErr hex.InvalidByteError
	if errors.As(err, &hexErr) {
		writeError(w, http.StatusBadRequest, CodeBadHex, err.Error())
		return
	}
	if status, code, ok := policyError(err); ok {
		writeError(w, status, code, err.Error())
		return
	}
	// Failures of the daemon's own storage: the answer says what happened
	// and whether the change was made, never which file failed (the
	// message of a wrapped system error names paths in the state
	// directory); the daemon log has the details.
	if errors.Is(err, vault.ErrCompact) {
		s.log.Error("compaction failed", "err", err)
		status := http.StatusInternalServerError
		if vault.IsNoSpace(err) {
			status = http.StatusInsufficientStorage
		}
		writeError(w, status, CodeCompact, "the change was made, but rewriting the vault database to purge destroyed records failed (the daemon retries; see its log)")
		return
	}
	if vault.IsNoSpace(err) {
		s.log.Error("no space left", "err", err)
		writeError(w, http.StatusInsufficientStorage, CodeNoSpace, "no space left on the daemon's state file system: nothing was changed")
		return
	}
	if errors.Is(err, vault.ErrBackendUnavailable) {
		// A stalled or missing device fails every request at once: said
		// at debug, not once per request. The data socket's callers learn
		// nothing of the device (its path, address or token).
		s.log.Debug("backend unavailable", "err", err)
		if rec, ok := w.(*statusRecorder); ok && rec.sock == SocketData {
			writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "the key backend (TPM or token) is unavailable or did not answer in time; retry later")
			return
		}
	}
	for _, e := range table {
		if errors.Is(err, e.target) {
			writeError(w, e.status, e.code, err.Error())
			return
		}
	}
	s.log.Error("internal error", "err", err)
	writeError(w, http.StatusInternalServerError, CodeInternal, "internal error (see the daemon log)")
}

var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadRequest}, args...)...)
}

// decodeJSON reads a JSON body strictly: one object, no unknown fields.
func decodeJSON(r *http.Request, v any) error { return decodeStrict(r.Body, v) }

// decodeHex decodes a named hex field, saying which field was bad.
func decodeHex(field, s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return b, nil
}

// identityOf picks the identity from text or hex; exactly one must be set.
func identityOf(text, hexStr string) ([]byte, error) {
	switch {
	case text != "" && hexStr != "":
		return nil, badRequest("give identity or identity_hex, not both")
	case text != "":
		return []byte(text), nil
	case hexStr != "":
		b, err := decodeHex("identity_hex", hexStr)
		if err != nil {
			return nil, err
		}
		if len(b) == 0 {
			return nil, badRequest("identity_hex is empty")
		}
		return b, nil
	}
	return nil, badRequest("missing identity or identity_hex")
}

// status counts every PSK on the admin socket, and on the data socket only
// those the caller may derive. The data socket, open to every local user,
// says only what a TLS stack needs (version, node, backend name, hashes);
// the backend's description (KEK path, device, token label, model, serial,
// module path) is for the admin socket only.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	n := s.v.Count() // O(1): no copy of the records
	info := s.v.BackendInfo()
	if sock, _ := r.Context().Value(keySocket).(Socket); sock == SocketData {
		var err error
		if n, err = s.v.CountDerivable(callerOf(r.Context())); err != nil {
			s.fail(w, err)
			return
		}
		info = vault.BackendInfo{Name: info.Name, Hardware: info.Hardware, HashNames: info.HashNames}
	}
	st := Status{Version: Version, NodeID: s.v.NodeID(), Backend: wire.BackendInfo{Name: info.Name, Description: info.Description, Hardware: info.Hardware, HashNames: info.HashNames}, PSKs: n}
	if sock, _ := r.Context().Value(keySocket).(Socket); sock != SocketData {
		st.Problems = s.problems()
		vs := s.v.Stats() // O(1): counts the vault keeps
		st.PSKsByState = map[string]int{"active": vs.Active, "expired": vs.Expired, "revoked": vs.Revoked}
		if !vs.NextExpiry.IsZero() {
			t := vs.NextExpiry.UTC()
			st.NextExpiry = &t
		}
	}
	writeJSON(w, http.StatusOK, st)
}

// problems says what keeps the daemon from full service, for the admin
// socket's status.
func (s *Server) problems() []string {
	var out []string
	if s.auditBroken.Load() {
		out = append(out, "audit log not writable: requests are refused with 503 audit_unavailable (audit_failure = \"refuse\") or answered unaudited (\"log\")")
	}
	if stalled, since := s.v.BackendStalled(); stalled {
		out = append(out, "backend stalled: a call has been running past its request's deadline since "+since.UTC().Format(time.RFC3339)+"; requests that need it get 503 backend_unavailable")
	}
	if err := s.v.CompactionPending(); err != nil {
		out = append(out, "compaction of vault.db pending (no room for a second copy?): destroyed records may linger in its freed pages")
	}
	return out
}

// refIdentity reads the body of an endpoint that names one PSK and notes
// the identity in the audit line.
func (s *Server) refIdentity(r *http.Request) ([]byte, error) {
	var ref IdentityRef
	if err := decodeJSON(r, &ref); err != nil {
		return nil, err
	}
	id, err := refBytes(ref)
	auditOf(r).Identity = hexOf(id)
	return id, err
}

func (s *Server) show(w http.ResponseWriter, r *http.Request) {
	id, err := s.refIdentity(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	p, err := s.v.Get(id)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, FromRecord(p))
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	id, err := s.refIdentity(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := s.v.Delete(r.Context(), id); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// importPSK stores an EPSK (or a wrapped PRK). The body is an envelope:
// the PSKSpec as JSON, then the raw key.
func (s *Server) importPSK(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != ContentTypeEnvelope {
		s.fail(w, badRequest("Content-Type must be %s (metadata and raw key, docs/API.md)", ContentTypeEnvelope))
		return
	}
	body, err := readBody(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	defer clear(body[:cap(body)])
	var spec PSKSpec
	key, err := ParseEnvelope(body, &spec)
	if err != nil {
		s.fail(w, err)
		return
	}
	req, err := specRequest(spec, false)
	auditOf(r).Identity = hexOf(req.Identity)
	if err != nil {
		s.fail(w, err)
		return
	}
	req.Key = key
	p, err := s.v.Import(r.Context(), req)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, FromRecord(p))
}

// createPSK generates an EPSK. The body is a PSKSpec as JSON; the answer
// is the raw key, its identity in the Pskvault-Identity-Hex header.
func (s *Server) createPSK(w http.ResponseWriter, r *http.Request) {
	var spec PSKSpec
	if err := decodeJSON(r, &spec); err != nil {
		s.fail(w, err)
		return
	}
	req, err := specRequest(spec, true)
	auditOf(r).Identity = hexOf(req.Identity)
	if err != nil {
		s.fail(w, err)
		return
	}
	p, key, err := s.v.Create(r.Context(), req)
	if err != nil {
		s.fail(w, err)
		return
	}
	auditOf(r).Identity = p.IdentityHex()
	defer clear(key)
	w.Header().Set("Content-Type", ContentTypeKey)
	w.Header().Set(HeaderIdentity, p.IdentityHex())
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	w.Write(key)
}

// parseDerive decodes and checks a derive request body.
func parseDerive(r *http.Request) (vault.DeriveRequest, error) {
	var req DeriveRequest
	if binaryBody(r) {
		br, err := readBinRequest(r)
		if err != nil {
			return vault.DeriveRequest{}, err
		}
		if br.ImportedIdentity != nil {
			return vault.DeriveRequest{}, badRequest("derive takes the external identity field, not an imported identity (use lookup)")
		}
		if req, err = binDeriveRequest(br); err != nil {
			return vault.DeriveRequest{}, err
		}
	} else if err := decodeJSON(r, &req); err != nil {
		return vault.DeriveRequest{}, err
	}
	id, err := identityOf(req.Identity, req.IdentityHex)
	if err != nil {
		return vault.DeriveRequest{}, err
	}
	ctxBytes, err := decodeHex("context_hex", req.ContextHex)
	if err != nil {
		return vault.DeriveRequest{}, err
	}
	if err := checkImportedLen(len(id), len(ctxBytes)); err != nil {
		return vault.DeriveRequest{}, err
	}
	proto, err := importer.ParseProtocol(req.Protocol)
	if err != nil {
		return vault.DeriveRequest{}, err
	}
	kdf, err := importer.ParseKDF(req.KDF)
	if err != nil {
		return vault.DeriveRequest{}, err
	}
	return vault.DeriveRequest{Identity: id, Context: ctxBytes, Target: vault.Target{Protocol: proto, KDF: kdf}, Peer: req.Peer, Role: req.Role}, nil
}

// checkImportedLen refuses, before anything about a PSK is looked up, an
// identity and context whose ImportedIdentity would exceed 65535 bytes.
func checkImportedLen(idLen, ctxLen int) error {
	if n := 2 + idLen + 2 + ctxLen + 4; n > importer.MaxIdentityLen {
		return fmt.Errorf("%w: the ImportedIdentity of a %d-byte identity and a %d-byte context would be %d bytes: %w", errBadRequest, idLen, ctxLen, n, importer.ErrIdentityTooLong)
	}
	return nil
}

// deriveFor runs a derivation for the request's caller. The vault checks the
// caller against the access lists before anything about the PSK is revealed;
// a refused caller gets vault.Denied, which answers exactly like an unknown
// PSK, and only the audit line tells the two apart.
func (s *Server) deriveFor(r *http.Request, req vault.DeriveRequest) (*vault.Derived, error) {
	ae := auditOf(r)
	req.Caller = callerOf(r.Context())
	d, err := s.v.Derive(r.Context(), req)
	ae.result = resultOf(err)
	if errors.Is(err, vault.ErrDenied) {
		ae.Result, ae.Reason, ae.Role = "denied", "caller not in the access list", req.Role
	}
	if err != nil {
		return nil, err
	}
	ae.Role = d.Role
	return d, nil
}

func deriveResponse(d *vault.Derived, req vault.DeriveRequest) DeriveResponse {
	return DeriveResponse{
		ImportedIdentity: hexOf(d.ImportedIdentity),
		IPSKX:            secretRef(0), // written by writeSecretJSON
		IdentityHex:      d.PSK.IdentityHex(),
		ContextHex:       hexOf(d.Context),
		Protocol:         req.Target.Protocol.String(),
		KDF:              req.Target.KDF.String(),
		Hash:             d.PSK.Hash.String(),
		Role:             d.Role,
		NotAfter:         d.PSK.NotAfter,
		PSKPolicy:        PolicyOf(d.PSK),
	}
}

func (s *Server) derive(w http.ResponseWriter, r *http.Request) {
	req, err := parseDerive(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	ae := auditOf(r)
	ae.Identity, ae.Target, ae.Context = hexOf(req.Identity), req.Target.String(), hexOf(req.Context)
	d, err := s.deriveFor(r, req)
	if err != nil {
		if ae.Reason == "" {
			ae.Reason = err.Error()
		}
		s.fail(w, err)
		return
	}
	defer clear(d.IPSKX)
	w.Header().Set("Cache-Control", "no-store")
	if wantsBinary(r) {
		k := binKeyOf(d, req.Target)
		writeTLV(w, http.StatusOK, k.AppendTo(nil))
		return
	}
	writeSecretJSON(w, http.StatusOK, deriveResponse(d, req), [][]byte{d.IPSKX})
}
