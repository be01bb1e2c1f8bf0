package api

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pskvault/pskvault/vault"
)

// PSKPolicy is the RFC 9257 part of a PSK as the API shows it. It is
// embedded in PSK (show, list) and in DeriveResponse (derive, lookup) so a
// TLS stack learns, with every key, the rules it must enforce:
// psk_dhe_ke_required (offer and accept only psk_dhe_ke) and
// early_data_allowed (never accept 0-RTT data when false).
type PSKPolicy struct {
	DHERequired   bool      `json:"psk_dhe_ke_required"`
	EarlyData     bool      `json:"early_data_allowed"`
	Kind          string    `json:"kind"` // "pairwise" or "group"
	Group         []string  `json:"group,omitempty"`
	NodeContext   bool      `json:"node_context,omitempty"`
	LowEntropy    bool      `json:"low_entropy,omitempty"`
	Provenance    string    `json:"provenance,omitempty"`
	Finalized     bool      `json:"finalized,omitempty"`
	Generation    int       `json:"generation,omitempty"`
	RotatedFrom   string    `json:"rotated_from_hex,omitempty"`
	RotatedTo     string    `json:"rotated_to_hex,omitempty"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	RevokeReason  string    `json:"revoke_reason,omitempty"`
	PolicyWarning []string  `json:"warnings,omitempty"` // identity and entropy findings
}

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
	if p.LowEntropy {
		out.PolicyWarning = append(out.PolicyWarning, "imported with --allow-low-entropy: the key looks guessable (RFC 9257 section 4.2)")
	}
	return out
}

// policyParams are the import/create query parameters of RFC 9257 policy.
// Booleans take strconv.ParseBool values; group is a comma-separated list.
var policyParams = map[string]bool{
	"allow_low_entropy": true, "allow_psk_ke": true, "allow_early_data": true,
	"group": true, "node_context": true, "provenance": true, "random_identity": true,
	"allow_identity_warnings": true, "finalize": true, "stack": true,
}

func boolParam(q url.Values, k string) (bool, error) {
	s := q.Get(k)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, badRequest("%s: want true or false", k)
	}
	return b, nil
}

// policyQuery fills req.PolicyRequest from the query.
func policyQuery(q url.Values, req *vault.ImportRequest) error {
	p := &req.PolicyRequest
	for k, dst := range map[string]*bool{
		"allow_low_entropy": &p.AllowLowEntropy, "allow_psk_ke": &p.AllowPSKKE, "allow_early_data": &p.AllowEarlyData,
		"node_context": &p.NodeContext, "random_identity": &p.RandomIdentity,
		"allow_identity_warnings": &p.AllowIdentityWarnings, "finalize": &p.Finalize,
	} {
		var err error
		if *dst, err = boolParam(q, k); err != nil {
			return err
		}
	}
	if g := q.Get("group"); g != "" {
		p.Group = strings.Split(g, ",")
	}
	p.Provenance, p.Stack = q.Get("provenance"), q.Get("stack")
	return nil
}

// Policy error codes.
const (
	CodeLowEntropy      = "low_entropy"
	CodeKeyReused       = "key_reused"
	CodeGroup           = "group_policy"
	CodeContextMismatch = "context_mismatch"
	CodeIdentity        = "identity_refused"
	CodeFinalized       = "finalized"
	CodeStackLimit      = "stack_limit"
	CodeMustViolation   = "must_violation"
)

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
		{vault.ErrStackLimit, http.StatusBadRequest, CodeStackLimit},
		{vault.ErrMustViolation, http.StatusForbidden, CodeMustViolation},
	} {
		if errors.Is(err, e.target) {
			return e.status, e.code, true
		}
	}
	return 0, "", false
}

// RevokeRequest is POST /v1/psks/{id}/revoke.
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"`
}

// FinalizeRequest is POST /v1/psks/{id}/finalize. ContextsHex lists the
// contexts to keep for a PSK without a node-identifier context (default:
// the empty context only).
type FinalizeRequest struct {
	ContextsHex []string `json:"contexts_hex,omitempty"`
}

// policyRoutes adds the RFC 9257 lifecycle and audit endpoints. All are
// admin endpoints.
func (s *Server) policyRoutes() {
	s.mux.HandleFunc("GET /v1/check", s.check)
	s.mux.HandleFunc("POST /v1/psks/{id}/revoke", s.revoke)
	s.mux.HandleFunc("POST /v1/psks/{id}/finalize", s.finalize)
	s.mux.HandleFunc("POST /v1/psks/{id}/rotate", s.rotate)
	s.mux.HandleFunc("POST /v1/sweep", s.sweep)
}

// SweepResponse answers POST /v1/sweep: the PSKs whose expired keys were
// destroyed.
type SweepResponse struct {
	SweptHex []string `json:"swept_hex"`
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

func (s *Server) check(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.v.Check())
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	id, err := s.pathIdentity(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	auditOf(r).Identity = hexOf(id)
	var req RevokeRequest
	if err := decodeJSON(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	auditOf(r).Reason = req.Reason
	p, err := s.v.Revoke(r.Context(), id, req.Reason)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, FromRecord(p))
}

func (s *Server) finalize(w http.ResponseWriter, r *http.Request) {
	id, err := s.pathIdentity(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	auditOf(r).Identity = hexOf(id)
	var req FinalizeRequest
	if err := decodeJSON(r, &req); err != nil {
		s.fail(w, err)
		return
	}
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

// rotate makes the next generation. Query: identity or identity_hex (the new
// generation's; omit for a random one when the old identity is random),
// overlap (Go duration, e.g. 72h), not_after, provenance, allow_low_entropy,
// allow_identity_warnings. With an application/octet-stream body the body is
// the new EPSK and the answer is the new record as JSON; without one the
// vault generates the key and answers like /v1/psks/create.
func (s *Server) rotate(w http.ResponseWriter, r *http.Request) {
	id, err := s.pathIdentity(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	auditOf(r).Identity = hexOf(id)
	q := r.URL.Query()
	allowed := map[string]bool{"identity": true, "identity_hex": true, "overlap": true, "not_after": true, "provenance": true, "allow_low_entropy": true, "allow_identity_warnings": true}
	for k, vs := range q {
		if !allowed[k] || len(vs) != 1 {
			s.fail(w, badRequest("unknown or repeated query parameter %q", k))
			return
		}
	}
	var req vault.RotateRequest
	if q.Get("identity") != "" || q.Get("identity_hex") != "" {
		if req.NewIdentity, err = identityOf(q.Get("identity"), q.Get("identity_hex")); err != nil {
			s.fail(w, err)
			return
		}
	}
	if o := q.Get("overlap"); o != "" {
		if req.Overlap, err = time.ParseDuration(o); err != nil || req.Overlap < 0 {
			s.fail(w, badRequest("overlap: want a non-negative duration, e.g. 72h"))
			return
		}
	}
	if na := q.Get("not_after"); na != "" {
		if req.NotAfter, err = time.Parse(time.RFC3339, na); err != nil {
			s.fail(w, badRequest("not_after: want RFC 3339 time, e.g. 2027-01-02T15:04:05Z"))
			return
		}
	}
	req.Provenance = q.Get("provenance")
	if req.AllowLowEntropy, err = boolParam(q, "allow_low_entropy"); err == nil {
		req.AllowIdentityWarnings, err = boolParam(q, "allow_identity_warnings")
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	if r.Header.Get("Content-Type") == ContentTypeKey {
		var body bytes.Buffer
		_, err := body.ReadFrom(r.Body)
		defer clear(body.Bytes()[:body.Cap()])
		if err != nil {
			s.fail(w, err)
			return
		}
		if body.Len() == 0 {
			s.fail(w, badRequest("empty key body (omit the body and the Content-Type to have the vault generate the key)"))
			return
		}
		req.Key = body.Bytes()
	}
	p, key, err := s.v.Rotate(r.Context(), id, req)
	if err != nil {
		s.fail(w, err)
		return
	}
	if key == nil {
		writeJSON(w, http.StatusCreated, FromRecord(p))
		return
	}
	defer clear(key)
	w.Header().Set("Content-Type", ContentTypeKey)
	w.Header().Set(HeaderIdentity, hex.EncodeToString(p.Identity))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	w.Write(key)
}
