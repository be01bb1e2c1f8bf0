package api

import (
	"mime"
	"net/http"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// mediaIs reports whether a Content-Type or Accept header value names the
// binary form (parameters ignored).
func mediaIs(v string) bool {
	if v == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(v)
	return err == nil && mt == ContentTypeTLV
}

// binaryBody reports whether r's body is in the binary form.
func binaryBody(r *http.Request) bool { return mediaIs(r.Header.Get("Content-Type")) }

// wantsBinary reports whether r asks for a binary answer.
func wantsBinary(r *http.Request) bool { return mediaIs(r.Header.Get("Accept")) }

// writeTLV writes a binary answer and wipes it (it holds keys).
func writeTLV(w http.ResponseWriter, code int, body []byte) {
	defer clear(body)
	w.Header().Set("Content-Type", ContentTypeTLV)
	w.WriteHeader(code)
	w.Write(body)
}

// readBinRequest reads and decodes a binary request body.
func readBinRequest(r *http.Request) (BinRequest, error) {
	b, err := readBody(r)
	if err != nil {
		return BinRequest{}, err
	}
	br, err := ParseBinRequest(b)
	if err != nil {
		return br, badRequest("%v", err)
	}
	return br, nil
}

func protoName(p uint16) (string, error) {
	if err := importer.Protocol(p).Check(); err != nil {
		return "", err
	}
	return importer.Protocol(p).String(), nil
}

func kdfName(k uint16) (string, error) {
	if err := importer.KDF(k).Check(); err != nil {
		return "", err
	}
	return importer.KDF(k).String(), nil
}

// lookupRequest converts a binary lookup for the JSON path's checks.
func binLookupRequest(br BinRequest) (LookupRequest, error) {
	var req LookupRequest
	if len(br.ImportedIdentity) == 0 {
		return req, badRequest("missing imported identity field (0x%02x)", TagImportedIdentity)
	}
	req.IdentityHex = hexOf(br.ImportedIdentity)
	if br.HasContext {
		h := hexOf(br.Context)
		req.ContextHex = &h
	}
	var err error
	if br.Protocol != 0 {
		if req.Protocol, err = protoName(br.Protocol); err != nil {
			return req, err
		}
	}
	if br.KDF != 0 {
		if req.KDF, err = kdfName(br.KDF); err != nil {
			return req, err
		}
	}
	return req, nil
}

// offersRequest converts a binary offers request.
func binOffersRequest(br BinRequest) (OffersRequest, error) {
	req := OffersRequest{Server: br.Node, ContextHex: hexOf(br.Context)}
	var err error
	if req.Protocol, err = protoName(br.Protocol); err != nil {
		return req, err
	}
	req.KDF, err = kdfName(br.KDF)
	return req, err
}

// deriveRequest converts a binary derive request.
func binDeriveRequest(br BinRequest) (DeriveRequest, error) {
	req := DeriveRequest{ContextHex: hexOf(br.Context), Peer: br.Node}
	if len(br.Identity) == 0 {
		return req, badRequest("missing identity field (0x%02x)", TagIdentity)
	}
	req.IdentityHex = hexOf(br.Identity)
	switch br.Role {
	case RoleClient:
		req.Role = "client"
	case RoleServer:
		req.Role = "server"
	}
	var err error
	if req.Protocol, err = protoName(br.Protocol); err != nil {
		return req, err
	}
	req.KDF, err = kdfName(br.KDF)
	return req, err
}

// binKeyOf is a derivation in the binary form; it shares d.IPSKX.
func binKeyOf(d *vault.Derived, t vault.Target) BinKey {
	pol := PolicyOf(d.PSK)
	k := BinKey{
		ImportedIdentity: d.ImportedIdentity,
		IPSKX:            d.IPSKX,
		Identity:         d.PSK.Identity,
		Context:          d.Context,
		Protocol:         uint16(t.Protocol),
		KDF:              uint16(t.KDF),
		Hash:             uint16(d.PSK.Hash),
		Generation:       uint32(pol.Generation),
		NotAfter:         d.PSK.NotAfter,
	}
	switch d.Role {
	case "client":
		k.Role = RoleClient
	case "server":
		k.Role = RoleServer
	}
	for _, f := range []struct {
		on   bool
		flag uint32
	}{
		{pol.DHERequired, FlagDHERequired}, {pol.EarlyData, FlagEarlyData}, {pol.LowEntropy, FlagLowEntropy},
		{pol.Kind == "group", FlagGroup}, {pol.NodeContext, FlagNodeContext}, {pol.Finalized, FlagFinalized},
	} {
		if f.on {
			k.Flags |= f.flag
		}
	}
	if k.Flags&FlagEarlyData != 0 {
		k.MaxEarlyData = DefaultMaxEarlyData
	}
	return k
}
