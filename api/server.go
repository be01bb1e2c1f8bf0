package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// Server answers the socket protocol for one vault.
type Server struct {
	v   *vault.Vault
	log *slog.Logger
	mux *http.ServeMux
}

// NewServer returns a server for v. log receives one line per request and
// never any key material.
func NewServer(v *vault.Vault, log *slog.Logger) *Server {
	s := &Server{v: v, log: log, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /v1/status", s.status)
	s.mux.HandleFunc("GET /v1/psks", s.list)
	s.mux.HandleFunc("GET /v1/psks/{id}", s.show)
	s.mux.HandleFunc("DELETE /v1/psks/{id}", s.delete)
	s.mux.HandleFunc("POST /v1/psks/import", s.importPSK)
	s.mux.HandleFunc("POST /v1/psks/create", s.createPSK)
	s.mux.HandleFunc("POST /v1/derive", s.derive)
	return s
}

// HTTPServer wraps the handler with the timeouts and limits a local daemon
// needs against slow or oversized clients.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }

// ServeHTTP serves one request, bounded to MaxBody, and logs it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	r.Body = http.MaxBytesReader(rec, r.Body, MaxBody)
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p))
			writeError(rec, http.StatusInternalServerError, CodeInternal, "internal error")
		}
		s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", rec.code, "duration", time.Since(start))
	}()
	if _, pattern := s.mux.Handler(r); pattern == "" {
		writeError(rec, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no endpoint %s %s (see docs/API.md)", r.Method, r.URL.Path))
		return
	}
	s.mux.ServeHTTP(rec, r)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
	clear(b)
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	b, _ := json.Marshal(Error{Code: errCode, Message: msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
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
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("malformed JSON body: %v", err)
	}
	if dec.More() {
		return badRequest("malformed JSON body: trailing data after the object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("malformed JSON body: trailing data after the object")
	}
	return nil
}

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

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, Status{Version: Version, NodeID: s.v.NodeID(), Backend: s.v.BackendInfo(), PSKs: len(s.v.List())})
}

func (s *Server) list(w http.ResponseWriter, _ *http.Request) {
	out := PSKList{PSKs: []PSK{}}
	for _, p := range s.v.List() {
		out.PSKs = append(out.PSKs, FromRecord(p))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) pathIdentity(r *http.Request) ([]byte, error) {
	id, err := decodeHex("identity in path", r.PathValue("id"))
	if err == nil && len(id) == 0 {
		err = badRequest("empty identity in path")
	}
	return id, err
}

func (s *Server) show(w http.ResponseWriter, r *http.Request) {
	id, err := s.pathIdentity(r)
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
	id, err := s.pathIdentity(r)
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

// importQuery parses the query of POST /v1/psks/import and /create.
func importQuery(q url.Values, create bool) (vault.ImportRequest, error) {
	var req vault.ImportRequest
	allowed := map[string]bool{"identity": true, "identity_hex": true, "client": true, "server": true, "hash": true, "target": true, "not_after": true, "param": true}
	if !create {
		allowed["wrapped_key_bits"] = true
	}
	for k, vs := range q {
		if !allowed[k] {
			return req, badRequest("unknown query parameter %q", k)
		}
		if k != "target" && k != "param" && len(vs) != 1 {
			return req, badRequest("query parameter %q given %d times", k, len(vs))
		}
	}
	var err error
	if req.Identity, err = identityOf(q.Get("identity"), q.Get("identity_hex")); err != nil {
		return req, err
	}
	req.ClientNode, req.ServerNode = q.Get("client"), q.Get("server")
	if req.Hash, err = importer.ParseHash(q.Get("hash")); err != nil {
		return req, err
	}
	if req.Targets, err = vault.ParseTargets(q["target"]); err != nil {
		return req, err
	}
	if na := q.Get("not_after"); na != "" {
		if req.NotAfter, err = time.Parse(time.RFC3339, na); err != nil {
			return req, badRequest("not_after: want RFC 3339 time, e.g. 2027-01-02T15:04:05Z")
		}
	}
	for _, kv := range q["param"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return req, badRequest("param %q: want NAME=VALUE", kv)
		}
		if req.Params == nil {
			req.Params = map[string]string{}
		}
		if _, dup := req.Params[k]; dup {
			return req, badRequest("param %q given twice", k)
		}
		req.Params[k] = v
	}
	if wb := q.Get("wrapped_key_bits"); wb != "" {
		n, err := strconv.Atoi(wb)
		if err != nil || n <= 0 {
			return req, badRequest("wrapped_key_bits: want a positive number of bits")
		}
		req.Wrapped, req.WrappedKeyBits = true, n
	}
	return req, nil
}

func (s *Server) importPSK(w http.ResponseWriter, r *http.Request) {
	req, err := importQuery(r.URL.Query(), false)
	if err != nil {
		s.fail(w, err)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != ContentTypeKey {
		s.fail(w, badRequest("Content-Type must be %s (the body is the raw key)", ContentTypeKey))
		return
	}
	var body bytes.Buffer
	body.Grow(512)
	_, err = body.ReadFrom(r.Body)
	defer clear(body.Bytes()[:body.Cap()])
	if err != nil {
		s.fail(w, err)
		return
	}
	req.Key = body.Bytes()
	p, err := s.v.Import(r.Context(), req)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, FromRecord(p))
}

func (s *Server) createPSK(w http.ResponseWriter, r *http.Request) {
	req, err := importQuery(r.URL.Query(), true)
	if err != nil {
		s.fail(w, err)
		return
	}
	p, key, err := s.v.Create(r.Context(), req)
	if err != nil {
		s.fail(w, err)
		return
	}
	defer clear(key)
	w.Header().Set("Content-Type", ContentTypeKey)
	w.Header().Set(HeaderIdentity, p.IdentityHex())
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	w.Write(key)
}

func (s *Server) derive(w http.ResponseWriter, r *http.Request) {
	var req DeriveRequest
	if err := decodeJSON(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	id, err := identityOf(req.Identity, req.IdentityHex)
	if err != nil {
		s.fail(w, err)
		return
	}
	ctxBytes, err := decodeHex("context_hex", req.ContextHex)
	if err != nil {
		s.fail(w, err)
		return
	}
	proto, err := importer.ParseProtocol(req.Protocol)
	if err != nil {
		s.fail(w, err)
		return
	}
	kdf, err := importer.ParseKDF(req.KDF)
	if err != nil {
		s.fail(w, err)
		return
	}
	d, err := s.v.Derive(r.Context(), vault.DeriveRequest{Identity: id, Context: ctxBytes, Target: vault.Target{Protocol: proto, KDF: kdf}})
	if err != nil {
		s.fail(w, err)
		return
	}
	defer clear(d.IPSKX)
	resp := DeriveResponse{
		ImportedIdentity: hexOf(d.ImportedIdentity),
		IPSKX:            hexOf(d.IPSKX),
		IdentityHex:      d.PSK.IdentityHex(),
		ContextHex:       hexOf(ctxBytes),
		Protocol:         proto.String(),
		KDF:              kdf.String(),
		Hash:             d.PSK.Hash.String(),
		Role:             d.Role,
		NotAfter:         d.PSK.NotAfter,
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
}
