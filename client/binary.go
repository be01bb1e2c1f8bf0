package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/pskvault/pskvault/api/wire"
	"github.com/pskvault/pskvault/importer"
)

// MaxBinaryAnswer bounds a binary answer the client reads (an offers answer
// holds one record per offered key).
const MaxBinaryAnswer = 1 << 20

// UseBinary makes Lookup, Offers and Derive speak the binary form of the
// protocol (wire.ContentTypeTLV, docs/API.md "Binary form") instead of JSON.
// The answers are the same; Derived.Response then holds only the fields
// the binary form carries (no warnings, provenance or rotation links).
// Call it before the client is shared.
func (c *Client) UseBinary(on bool) { c.binary = on }

func targetCodes(protocol, kdf string) (p, k uint16, err error) {
	if protocol != "" {
		pp, err := importer.ParseProtocol(protocol)
		if err != nil {
			return 0, 0, err
		}
		p = uint16(pp)
	}
	if kdf != "" {
		kk, err := importer.ParseKDF(kdf)
		if err != nil {
			return 0, 0, err
		}
		k = uint16(kk)
	}
	return p, k, nil
}

// binExchange posts a binary request and returns the binary answer, which
// the caller wipes.
func (c *Client) binExchange(ctx context.Context, path string, req wire.BinRequest) ([]byte, error) {
	resp, err := c.doAccept(ctx, http.MethodPost, path, nil, wire.ContentTypeTLV, wire.ContentTypeTLV, req.Marshal())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != wire.ContentTypeTLV {
		return nil, fmt.Errorf("daemon answered %q, not the binary form (a daemon older than the binary protocol?)", ct)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBinaryAnswer+1))
	if err != nil {
		clear(body)
		return nil, fmt.Errorf("read daemon answer: %w", err)
	}
	if len(body) > MaxBinaryAnswer {
		clear(body)
		return nil, fmt.Errorf("daemon answer over %d bytes", MaxBinaryAnswer)
	}
	return body, nil
}

func derivedFromBin(k wire.BinKey) *Derived {
	d := &Derived{ImportedIdentity: k.ImportedIdentity, IPSKX: k.IPSKX}
	r := &d.Response
	r.ImportedIdentity = fmt.Sprintf("%x", k.ImportedIdentity)
	r.IdentityHex = fmt.Sprintf("%x", k.Identity)
	r.ContextHex = fmt.Sprintf("%x", k.Context)
	r.Protocol = importer.Protocol(k.Protocol).String()
	r.KDF = importer.KDF(k.KDF).String()
	r.Hash = importer.Hash(k.Hash).String()
	switch k.Role {
	case wire.RoleClient:
		r.Role = "client"
	case wire.RoleServer:
		r.Role = "server"
	}
	r.NotAfter = k.NotAfter
	r.DHERequired = k.Flags&wire.FlagDHERequired != 0
	r.EarlyData = k.Flags&wire.FlagEarlyData != 0
	r.LowEntropy = k.Flags&wire.FlagLowEntropy != 0
	r.NodeContext = k.Flags&wire.FlagNodeContext != 0
	r.Finalized = k.Flags&wire.FlagFinalized != 0
	r.Kind = "pairwise"
	if k.Flags&wire.FlagGroup != 0 {
		r.Kind = "group"
	}
	r.Generation = int(k.Generation)
	return d
}

func (c *Client) lookupBinary(ctx context.Context, imported, expectContext []byte, protocol, kdf string) (*Derived, error) {
	p, k, err := targetCodes(protocol, kdf)
	if err != nil {
		return nil, err
	}
	req := wire.BinRequest{ImportedIdentity: imported, Context: expectContext, HasContext: expectContext != nil, Protocol: p, KDF: k}
	if req.ImportedIdentity == nil {
		req.ImportedIdentity = []byte{}
	}
	body, err := c.binExchange(ctx, "/v1/lookup", req)
	if err != nil {
		return nil, err
	}
	defer clear(body)
	key, err := wire.ParseBinKey(body)
	if err != nil {
		return nil, fmt.Errorf("daemon sent a malformed key: %w", err)
	}
	return derivedFromBin(key), nil
}

func (c *Client) deriveBinary(ctx context.Context, r DeriveRequest) (*Derived, error) {
	p, k, err := targetCodes(r.Protocol, r.KDF)
	if err != nil {
		return nil, err
	}
	req := wire.BinRequest{Identity: r.Identity, Context: r.Context, HasContext: true, Protocol: p, KDF: k, Node: r.Peer}
	switch r.Role {
	case "client":
		req.Role = wire.RoleClient
	case "server":
		req.Role = wire.RoleServer
	case "":
	default:
		return nil, errors.New(`role: want "client" or "server"`)
	}
	body, err := c.binExchange(ctx, "/v1/derive", req)
	if err != nil {
		return nil, err
	}
	defer clear(body)
	key, err := wire.ParseBinKey(body)
	if err != nil {
		return nil, fmt.Errorf("daemon sent a malformed key: %w", err)
	}
	return derivedFromBin(key), nil
}

func (c *Client) offersBinary(ctx context.Context, server string, context []byte, protocol, kdf string) ([]Offer, error) {
	p, k, err := targetCodes(protocol, kdf)
	if err != nil {
		return nil, err
	}
	body, err := c.binExchange(ctx, "/v1/offers", wire.BinRequest{Node: server, Context: context, HasContext: true, Protocol: p, KDF: k})
	if err != nil {
		return nil, err
	}
	defer clear(body)
	keys, err := wire.ParseBinOffers(body)
	if err != nil {
		return nil, fmt.Errorf("daemon sent a malformed offer: %w", err)
	}
	out := make([]Offer, 0, len(keys))
	for _, x := range keys {
		d := derivedFromBin(x)
		out = append(out, Offer{Identity: x.Identity, ImportedIdentity: x.ImportedIdentity, IPSKX: x.IPSKX, Context: x.Context, Hash: d.Response.Hash, NotAfter: x.NotAfter, Policy: d.Response.PSKPolicy})
	}
	return out, nil
}
