package api

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// keys lists the keys of every PSK the caller may derive in a role: what a
// TLS server's key file must hold (every client it accepts) or a client's
// (every server it talks to). Like offers, a PSK the caller may not derive,
// or that is revoked, expired or not allowed for the target, is simply not
// listed.
func (s *Server) keys(w http.ResponseWriter, r *http.Request) {
	var req KeysRequest
	if err := decodeJSON(r, &req); err != nil {
		s.fail(w, err)
		return
	}
	if req.Role != "client" && req.Role != "server" {
		s.fail(w, badRequest("role: want client or server"))
		return
	}
	if req.Peer != "" {
		if err := vault.CheckNodeID(req.Peer); err != nil {
			s.fail(w, fmt.Errorf("peer: %w", err))
			return
		}
	}
	ctxBytes, err := decodeHex("context_hex", req.ContextHex)
	if err == nil {
		err = checkImportedLen(1, len(ctxBytes))
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	var t vault.Target
	if t.Protocol, err = importer.ParseProtocol(req.Protocol); err == nil {
		t.KDF, err = importer.ParseKDF(req.KDF)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	ae := auditOf(r)
	ae.Target, ae.Context, ae.Role = t.String(), hexOf(ctxBytes), req.Role
	caller := callerOf(r.Context())
	out := KeyList{Keys: []Offer{}}
	var keys [][]byte
	var created []time.Time
	defer func() {
		for _, k := range keys {
			clear(k)
		}
	}()
	me := s.v.NodeID()
	err = s.v.EachDerivable(caller, func(p *vault.PSK) bool {
		var ok bool
		switch {
		case p.IsGroup():
			ok = req.Peer != "" && req.Peer != me && slices.Contains(p.Group, me) && slices.Contains(p.Group, req.Peer)
		case req.Role == "client":
			ok = p.ClientNode == me && (req.Peer == "" || p.ServerNode == req.Peer)
		default:
			ok = p.ServerNode == me && (req.Peer == "" || p.ClientNode == req.Peer)
		}
		if !ok || !p.Allows(t) {
			return true
		}
		d, err := s.v.Derive(r.Context(), vault.DeriveRequest{Identity: p.Identity, Context: ctxBytes, Target: t, Peer: req.Peer, Role: req.Role, Caller: caller})
		if err != nil {
			return true
		}
		keys = append(keys, d.IPSKX)
		created = append(created, d.PSK.Created)
		out.Keys = append(out.Keys, offerOf(p, d, t, len(keys)-1))
		return true
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	sortOffers(out.Keys, created)
	ae.Count = len(out.Keys)
	w.Header().Set("Cache-Control", "no-store")
	writeSecretJSON(w, http.StatusOK, out, keys)
}
