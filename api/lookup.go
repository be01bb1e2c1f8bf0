package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// errNoKey is the one answer lookup and offers give for every reason a key
// is not handed out; the reason goes to the audit log only.
var errNoKey = errors.New("no key for this identity")

// parseLookup decodes a lookup body. A malformed wire identity is not a
// request error: it is answered like any identity without a key.
func parseLookup(r *http.Request) (LookupRequest, vault.Target, error) {
	var req LookupRequest
	var t vault.Target
	if binaryBody(r) {
		br, err := readBinRequest(r)
		if err != nil {
			return req, t, err
		}
		if br.Identity != nil || br.Node != "" || br.Role != 0 {
			return req, t, badRequest("lookup takes imported identity, context, protocol and KDF fields only")
		}
		if req, err = binLookupRequest(br); err != nil {
			return req, t, err
		}
	} else if err := decodeJSON(r, &req); err != nil {
		return req, t, err
	}
	if req.IdentityHex == "" {
		return req, t, badRequest("missing identity_hex")
	}
	if n := len(req.IdentityHex) / 2; n > importer.MaxIdentityLen {
		return req, t, fmt.Errorf("%w: identity_hex is a %d-byte ImportedIdentity: %w", errBadRequest, n, importer.ErrIdentityTooLong)
	}
	var err error
	if req.Protocol != "" {
		if t.Protocol, err = importer.ParseProtocol(req.Protocol); err != nil {
			return req, t, err
		}
	}
	if req.KDF != "" {
		if t.KDF, err = importer.ParseKDF(req.KDF); err != nil {
			return req, t, err
		}
	}
	if req.ContextHex != nil {
		if _, err := decodeHex("context_hex", *req.ContextHex); err != nil {
			return req, t, err
		}
	}
	return req, t, nil
}

// lookup is the TLS server's question: which key goes with the identity this
// ClientHello carries?
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) {
	req, want, err := parseLookup(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	ae := auditOf(r)
	d, dreq, reason := s.lookupKey(r, req, want)
	if reason != "" {
		if ae.Result == "" {
			ae.Result = CodeNoKey
		}
		ae.Reason = reason
		writeError(w, http.StatusNotFound, CodeNoKey, errNoKey.Error())
		return
	}
	defer clear(d.IPSKX)
	w.Header().Set("Cache-Control", "no-store")
	if wantsBinary(r) {
		k := binKeyOf(d, dreq.Target)
		writeTLV(w, http.StatusOK, k.AppendTo(nil))
		return
	}
	writeSecretJSON(w, http.StatusOK, deriveResponse(d, dreq), [][]byte{d.IPSKX})
}

// lookupKey returns the key for a wire identity, or why there is none.
func (s *Server) lookupKey(r *http.Request, req LookupRequest, want vault.Target) (*vault.Derived, vault.DeriveRequest, string) {
	ae := auditOf(r)
	wire, err := decodeHex("identity_hex", req.IdentityHex)
	if err != nil {
		return nil, vault.DeriveRequest{}, "identity_hex is not hex"
	}
	id, err := importer.ParseIdentity(wire)
	if err != nil {
		return nil, vault.DeriveRequest{}, "not an RFC 9258 ImportedIdentity: " + err.Error()
	}
	dreq := vault.DeriveRequest{Identity: id.External, Context: id.Context, Target: vault.Target{Protocol: id.Protocol, KDF: id.KDF}, Role: "server"}
	ae.Identity, ae.Target, ae.Context, ae.Role = hexOf(id.External), dreq.Target.String(), hexOf(id.Context), "server"
	if req.ContextHex != nil {
		wantCtx, _ := decodeHex("context_hex", *req.ContextHex)
		if !bytes.Equal(wantCtx, id.Context) {
			return nil, dreq, fmt.Sprintf("context %x is not the expected %x", id.Context, wantCtx)
		}
	}
	if want.Protocol != 0 && want.Protocol != id.Protocol {
		return nil, dreq, fmt.Sprintf("target protocol %s, the server runs %s", id.Protocol, want.Protocol)
	}
	if want.KDF != 0 && want.KDF != id.KDF {
		return nil, dreq, fmt.Sprintf("target KDF %s, the server expects %s", id.KDF, want.KDF)
	}
	d, err := s.deriveFor(r, dreq)
	if err != nil {
		if errors.Is(err, vault.ErrDenied) {
			return nil, dreq, "caller not in the access list"
		}
		return nil, dreq, err.Error()
	}
	if d.Role != "server" || !bytes.Equal(d.ImportedIdentity, wire) {
		clear(d.IPSKX)
		return nil, dreq, "derivation does not match the wire identity or role"
	}
	return d, dreq, ""
}

// parseOffers decodes and checks an offers request body.
func parseOffers(r *http.Request) (server string, ctxBytes []byte, t vault.Target, err error) {
	var req OffersRequest
	if binaryBody(r) {
		var br BinRequest
		if br, err = readBinRequest(r); err != nil {
			return
		}
		if br.ImportedIdentity != nil || br.Identity != nil || br.Role != 0 {
			err = badRequest("offers takes node, context, protocol and KDF fields only")
			return
		}
		if req, err = binOffersRequest(br); err != nil {
			return
		}
	} else if err = decodeJSON(r, &req); err != nil {
		return
	}
	if err = vault.CheckNodeID(req.Server); err != nil {
		err = fmt.Errorf("server: %w", err)
		return
	}
	if ctxBytes, err = decodeHex("context_hex", req.ContextHex); err != nil {
		return
	}
	if err = checkImportedLen(1, len(ctxBytes)); err != nil {
		return
	}
	if t.Protocol, err = importer.ParseProtocol(req.Protocol); err != nil {
		return
	}
	t.KDF, err = importer.ParseKDF(req.KDF)
	return req.Server, ctxBytes, t, err
}

// offers is the TLS client's question: which (identity, key) pairs do I
// offer to this server node?
func (s *Server) offers(w http.ResponseWriter, r *http.Request) {
	server, ctxBytes, t, err := parseOffers(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	ae := auditOf(r)
	ae.Target, ae.Context, ae.Role = t.String(), hexOf(ctxBytes), "client"
	caller := callerOf(r.Context())
	out := OfferList{Offers: []Offer{}}
	var keys [][]byte
	var created []time.Time
	defer func() {
		for _, k := range keys {
			clear(k)
		}
	}()
	binary := wantsBinary(r)
	var bins []BinKey
	me := s.v.NodeID()
	err = s.v.EachDerivable(caller, func(p *vault.PSK) bool {
		pairwise := p.ClientNode == me && p.ServerNode == server
		group := p.IsGroup() && slices.Contains(p.Group, me) && slices.Contains(p.Group, server) && server != me
		if !(pairwise || group) || !p.Allows(t) {
			return true
		}
		// The vault checks the caller; a PSK it may not use, or one that is
		// revoked or expired, is simply not offered.
		d, err := s.v.Derive(r.Context(), vault.DeriveRequest{Identity: p.Identity, Context: ctxBytes, Target: t, Peer: server, Role: "client", Caller: caller})
		if err != nil {
			return true
		}
		keys = append(keys, d.IPSKX)
		created = append(created, d.PSK.Created)
		if binary {
			bins = append(bins, binKeyOf(d, t))
		}
		out.Offers = append(out.Offers, offerOf(p, d, t, len(keys)-1))
		return true
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	sortOffers(out.Offers, created)
	ae.Count = len(out.Offers)
	w.Header().Set("Cache-Control", "no-store")
	if binary {
		writeTLV(w, http.StatusOK, AppendOffers(nil, sortedLike(bins, out.Offers)))
		return
	}
	writeSecretJSON(w, http.StatusOK, out, keys)
}

// sortOffers puts the newest generation first, then the most recently
// created PSK, then orders by identity; created[i] is offers[i]'s creation
// time. A client that takes the first offer thus uses a rotated link's new
// generation as soon as it exists (the old one stays listed until its
// overlap ends).
func sortOffers(offers []Offer, created []time.Time) {
	idx := make([]int, len(offers))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		x, y := idx[a], idx[b]
		if gx, gy := offers[x].Generation, offers[y].Generation; gx != gy {
			return gx > gy
		}
		if !created[x].Equal(created[y]) {
			return created[x].After(created[y])
		}
		return offers[x].IdentityHex < offers[y].IdentityHex
	})
	sorted := make([]Offer, len(offers))
	for i, j := range idx {
		sorted[i] = offers[j]
	}
	copy(offers, sorted)
}

// sortedLike orders bins as offers (already sorted): each imported identity
// names one PSK, so it pairs them up.
func sortedLike(bins []BinKey, offers []Offer) []BinKey {
	byID := make(map[string]BinKey, len(bins))
	for _, b := range bins {
		byID[hexOf(b.ImportedIdentity)] = b
	}
	out := make([]BinKey, 0, len(offers))
	for _, o := range offers {
		if b, ok := byID[o.ImportedIdentity]; ok {
			out = append(out, b)
		}
	}
	return out
}

// offerOf is the JSON entry of one derived key in an offers or keys answer;
// its ipskx is the secretRef'th key that writeSecretJSON writes.
func offerOf(p *vault.PSK, d *vault.Derived, t vault.Target, ref int) Offer {
	return Offer{
		IdentityHex:      p.IdentityHex(),
		ImportedIdentity: hexOf(d.ImportedIdentity),
		IPSKX:            secretRef(ref),
		ContextHex:       hexOf(d.Context),
		Protocol:         t.Protocol.String(),
		KDF:              t.KDF.String(),
		Hash:             d.PSK.Hash.String(),
		NotAfter:         d.PSK.NotAfter,
		PSKPolicy:        PolicyOf(d.PSK),
	}
}
