package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/pskvault/pskvault/api/wire"
)

// PolicySpec is the RFC 9257 part of a PSK to import or create. Zero values
// are the safe defaults.
type PolicySpec struct {
	AllowLowEntropy       bool     // import a key that looks low-entropy; flagged for good
	AllowPSKKE            bool     // allow psk_ke (no forward secrecy)
	AllowEarlyData        bool     // allow 0-RTT data
	Group                 []string // group members; then ClientNode/ServerNode stay empty
	NodeContext           bool     // require the canonical node-identifier context
	Provenance            string   // where the key comes from
	RandomIdentity        bool     // the vault picks a random identity; Identity stays empty
	AllowIdentityWarnings bool     // waive the waivable identity rules
	Finalize              bool     // finalize right after import
	Stack                 string   // check against a TLS stack's limits
}

func (p PolicySpec) addTo(w *wire.PSKSpec) {
	w.AllowLowEntropy, w.AllowPSKKE, w.AllowEarlyData = p.AllowLowEntropy, p.AllowPSKKE, p.AllowEarlyData
	w.NodeContext, w.RandomIdentity = p.NodeContext, p.RandomIdentity
	w.AllowIdentityWarnings, w.Finalize = p.AllowIdentityWarnings, p.Finalize
	w.Group, w.Provenance, w.Stack = p.Group, p.Provenance, p.Stack
}

// Check audits the whole vault against RFC 9257, following the pages
// (CheckPage reads one) and adding up their counts.
func (c *Client) Check(ctx context.Context) (*wire.Report, error) {
	var all *wire.Report
	cursor := ""
	for {
		r, err := c.CheckPage(ctx, cursor, 0)
		if err != nil {
			return nil, err
		}
		if all == nil {
			all = r
		} else {
			all.PSKs = append(all.PSKs, r.PSKs...)
			all.Must, all.Should, all.Warn, all.Errors = all.Must+r.Must, all.Should+r.Should, all.Warn+r.Warn, all.Errors+r.Errors
		}
		if r.NextCursor == "" {
			all.NextCursor = ""
			return all, nil
		}
		cursor = r.NextCursor
	}
}

// Sweep destroys the keys of expired PSKs and returns their identities.
func (c *Client) Sweep(ctx context.Context) ([]string, error) {
	var r wire.SweepResponse
	return r.SweptHex, c.getJSON(ctx, http.MethodPost, "/v1/sweep", nil, "", nil, &r)
}

// Revoke stops a PSK now and destroys its key; the record stays.
func (c *Client) Revoke(ctx context.Context, identity []byte, reason string) (*wire.PSK, error) {
	body, _ := json.Marshal(wire.RevokeRequest{IdentityHex: hex.EncodeToString(identity), Reason: reason})
	var p wire.PSK
	return &p, c.getJSON(ctx, http.MethodPost, "/v1/psks/revoke", nil, "application/json", body, &p)
}

// Finalize keeps the imported keys for the PSK's targets (and contexts) and
// destroys its main key.
func (c *Client) Finalize(ctx context.Context, identity []byte, contexts [][]byte) (*wire.PSK, error) {
	req := wire.FinalizeRequest{IdentityHex: hex.EncodeToString(identity)}
	for _, x := range contexts {
		req.ContextsHex = append(req.ContextsHex, hex.EncodeToString(x))
	}
	body, _ := json.Marshal(req)
	var p wire.PSK
	return &p, c.getJSON(ctx, http.MethodPost, "/v1/psks/finalize", nil, "application/json", body, &p)
}

// RotateSpec describes the next generation of a PSK.
type RotateSpec struct {
	NewIdentity           []byte // empty: random, when the old identity is random
	Overlap               time.Duration
	NotAfter              time.Time
	Provenance            string
	AllowLowEntropy       bool
	AllowIdentityWarnings bool
	// With a key: WrappedKeyBits > 0 means it is wrapped for the daemon's
	// hardware; Params are backend parameters; Bundle authenticates it.
	WrappedKeyBits int
	Params         map[string]string
	Bundle         *wire.BundleAuth
}

// Rotate makes the next generation. With key nil the daemon generates it and
// Rotate returns it for the peer (the caller zeroes it).
func (c *Client) Rotate(ctx context.Context, identity []byte, spec RotateSpec, key []byte) (newIdentity, newKey []byte, err error) {
	w := wire.RotateSpec{
		IdentityHex:           hex.EncodeToString(identity),
		Overlap:               spec.Overlap.String(),
		Provenance:            spec.Provenance,
		AllowLowEntropy:       spec.AllowLowEntropy,
		AllowIdentityWarnings: spec.AllowIdentityWarnings,
		WrappedKeyBits:        spec.WrappedKeyBits,
		Params:                spec.Params,
		Bundle:                spec.Bundle,
	}
	if len(spec.NewIdentity) > 0 {
		w.NewIdentityHex = hex.EncodeToString(spec.NewIdentity)
	}
	if !spec.NotAfter.IsZero() {
		w.NotAfter = spec.NotAfter.UTC().Format(time.RFC3339)
	}
	const path = "/v1/psks/rotate"
	if key != nil {
		body, err := wire.MarshalEnvelope(w, key)
		if err != nil {
			return nil, nil, err
		}
		defer clear(body)
		var p wire.PSK
		if err := c.getJSON(ctx, http.MethodPost, path, nil, wire.ContentTypeEnvelope, body, &p); err != nil {
			return nil, nil, err
		}
		id, err := hex.DecodeString(p.IdentityHex)
		return id, nil, err
	}
	body, _ := json.Marshal(w)
	resp, err := c.do(ctx, http.MethodPost, path, nil, "application/json", body)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	newKey, err = io.ReadAll(io.LimitReader(resp.Body, wire.MaxBody))
	if err != nil {
		clear(newKey)
		return nil, nil, fmt.Errorf("read generated key: %w", err)
	}
	if newIdentity, err = hex.DecodeString(resp.Header.Get(wire.HeaderIdentity)); err != nil {
		clear(newKey)
		return nil, nil, fmt.Errorf("daemon sent a bad %s header", wire.HeaderIdentity)
	}
	return newIdentity, newKey, nil
}
