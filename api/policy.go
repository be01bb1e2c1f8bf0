package api

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// PolicyOf converts a record's policy for the wire.
func PolicyOf(p *vault.PSK) PSKPolicy {
	out := PSKPolicy{
		DHERequired:  !p.PSKKE,
		EarlyData:    p.EarlyData,
		Kind:         "pairwise",
		Group:        p.Group,
		NodeContext:  p.NodeContext,
		LowEntropy:   p.LowEntropy,
		Provenance:   p.Provenance,
		Finalized:    p.IsFinalized(),
		Generation:   max(p.Generation, 1),
		KCV:          p.KCV,
		RevokedAt:    p.RevokedAt,
		RevokeReason: p.RevokeReason,
	}
	if p.IsGroup() {
		out.Kind = "group"
	}
	if len(p.RotatedFrom) > 0 {
		out.RotatedFrom = hexOf(p.RotatedFrom)
	}
	if len(p.RotatedTo) > 0 {
		out.RotatedTo = hexOf(p.RotatedTo)
	}
	for _, f := range p.IdentityFindings {
		out.PolicyWarning = append(out.PolicyWarning, f.String())
	}
	if n := len(p.Identity); n > importer.MaxIdentityLen-8 {
		out.PolicyWarning = append(out.PolicyWarning, fmt.Sprintf("identity is %d bytes: an RFC 9258 ImportedIdentity (at most 65535 bytes) holds at most %d bytes of external identity, so no key can be derived from this PSK", n, importer.MaxIdentityLen-8))
	}
	if p.LowEntropy {
		out.PolicyWarning = append(out.PolicyWarning, "imported with --allow-low-entropy: the key looks guessable (RFC 9257 section 4.2)")
	}
	return out
}

// policyError maps the vault's RFC 9257 refusals to a status and code.
func policyError(err error) (int, string, bool) {
	for _, e := range []struct {
		target error
		status int
		code   string
	}{
		{vault.ErrLowEntropy, http.StatusBadRequest, CodeLowEntropy},
		{vault.ErrKeyReused, http.StatusConflict, CodeKeyReused},
		{vault.ErrGroup, http.StatusForbidden, CodeGroup},
		{vault.ErrContext, http.StatusForbidden, CodeContextMismatch},
		{vault.ErrIdentity, http.StatusBadRequest, CodeIdentity},
		{vault.ErrFinalized, http.StatusForbidden, CodeFinalized},
		{vault.ErrBundleMAC, http.StatusBadRequest, CodeBundleMAC},
		{vault.ErrStackLimit, http.StatusBadRequest, CodeStackLimit},
		{vault.ErrMustViolation, http.StatusForbidden, CodeMustViolation},
	} {
		if errors.Is(err, e.target) {
			return e.status, e.code, true
		}
	}
	return 0, "", false
}

// policyRoutes adds the RFC 9257 lifecycle and audit endpoints. All are
// admin endpoints.
func (s *Server) policyRoutes() {
	s.mux.HandleFunc("GET /v1/check", s.check)
	s.mux.HandleFunc("POST /v1/psks/revoke", s.revoke)
	s.mux.HandleFunc("POST /v1/psks/finalize", s.finalize)
	s.mux.HandleFunc("POST /v1/psks/rotate", s.rotate)
	s.mux.HandleFunc("POST /v1/sweep", s.sweep)
}

func (s *Server) sweep(w http.ResponseWriter, r *http.Request) {
	ids, err := s.v.Sweep(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	out := SweepResponse{SweptHex: []string{}}
	for _, id := range ids {
		out.SweptHex = append(out.SweptHex, hexOf(id))
	}
	auditOf(r).Count = len(ids)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	var req RevokeRequest
	if err := decodeJSON(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	id, err := identityOf(req.Identity, req.IdentityHex)
	if err != nil {
		s.fail(w, err)
		return
	}
	auditOf(r).Identity, auditOf(r).Reason = hexOf(id), req.Reason
	p, err := s.v.Revoke(r.Context(), id, req.Reason)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, FromRecord(p))
}

func (s *Server) finalize(w http.ResponseWriter, r *http.Request) {
	var req FinalizeRequest
	if err := decodeJSON(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	id, err := identityOf(req.Identity, req.IdentityHex)
	if err != nil {
		s.fail(w, err)
		return
	}
	auditOf(r).Identity = hexOf(id)
	var fr vault.FinalizeRequest
	for i, h := range req.ContextsHex {
		c, err := decodeHex(fmt.Sprintf("contexts_hex[%d]", i), h)
		if err != nil {
			s.fail(w, err)
			return
		}
		fr.Contexts = append(fr.Contexts, c)
	}
	p, err := s.v.Finalize(r.Context(), id, fr)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, FromRecord(p))
}

// rotate makes the next generation. The body is a RotateSpec: as JSON
// (application/json) the vault generates the key and the answer is the raw
// key, like /v1/psks/create; in an envelope the key follows the spec and
// the answer is the new record as JSON.
func (s *Server) rotate(w http.ResponseWriter, r *http.Request) {
	var spec RotateSpec
	var key []byte
	switch ct := r.Header.Get("Content-Type"); ct {
	case ContentTypeEnvelope:
		body, err := readBody(r)
		if err != nil {
			s.fail(w, err)
			return
		}
		defer clear(body[:cap(body)])
		if key, err = ParseEnvelope(body, &spec); err != nil {
			s.fail(w, err)
			return
		}
		if len(key) == 0 {
			s.fail(w, badRequest("empty key in the envelope (send the spec as application/json to have the vault generate the key)"))
			return
		}
	case "application/json", "":
		if err := decodeJSON(r, &spec); err != nil {
			s.fail(w, err)
			return
		}
	default:
		s.fail(w, badRequest("Content-Type must be application/json or %s", ContentTypeEnvelope))
		return
	}
	id, req, err := rotateRequest(spec)
	auditOf(r).Identity = hexOf(id)
	if err != nil {
		s.fail(w, err)
		return
	}
	if key == nil && (req.Wrapped || req.Bundle != nil) {
		s.fail(w, badRequest("wrapped_key_bits and bundle need the key: send an envelope"))
		return
	}
	req.Key = key
	p, newKey, err := s.v.Rotate(r.Context(), id, req)
	if err != nil {
		s.fail(w, err)
		return
	}
	if newKey == nil {
		writeJSON(w, http.StatusCreated, FromRecord(p))
		return
	}
	defer clear(newKey)
	w.Header().Set("Content-Type", ContentTypeKey)
	w.Header().Set(HeaderIdentity, hex.EncodeToString(p.Identity))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	w.Write(newKey)
}
