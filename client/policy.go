package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/vault"
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

func (p PolicySpec) addTo(q url.Values) {
	for k, b := range map[string]bool{
		"allow_low_entropy": p.AllowLowEntropy, "allow_psk_ke": p.AllowPSKKE, "allow_early_data": p.AllowEarlyData,
		"node_context": p.NodeContext, "random_identity": p.RandomIdentity,
		"allow_identity_warnings": p.AllowIdentityWarnings, "finalize": p.Finalize,
	} {
		if b {
			q.Set(k, "true")
		}
	}
	if len(p.Group) > 0 {
		q.Set("group", strings.Join(p.Group, ","))
	}
	if p.Provenance != "" {
		q.Set("provenance", p.Provenance)
	}
	if p.Stack != "" {
		q.Set("stack", p.Stack)
	}
	if p.RandomIdentity && q.Get("identity_hex") == "" {
		q.Del("identity_hex")
	}
}

// Check audits the vault against RFC 9257.
func (c *Client) Check(ctx context.Context) (*vault.Report, error) {
	var r vault.Report
	return &r, c.getJSON(ctx, http.MethodGet, "/v1/check", nil, "", nil, &r)
}

// Sweep destroys the keys of expired PSKs and returns their identities.
func (c *Client) Sweep(ctx context.Context) ([]string, error) {
	var r api.SweepResponse
	return r.SweptHex, c.getJSON(ctx, http.MethodPost, "/v1/sweep", nil, "", nil, &r)
}

// Revoke stops a PSK now and destroys its key; the record stays.
func (c *Client) Revoke(ctx context.Context, identity []byte, reason string) (*api.PSK, error) {
	body, _ := json.Marshal(api.RevokeRequest{Reason: reason})
	var p api.PSK
	return &p, c.getJSON(ctx, http.MethodPost, "/v1/psks/"+hex.EncodeToString(identity)+"/revoke", nil, "application/json", body, &p)
}

// Finalize keeps the imported keys for the PSK's targets (and contexts) and
// destroys its main key.
func (c *Client) Finalize(ctx context.Context, identity []byte, contexts [][]byte) (*api.PSK, error) {
	var req api.FinalizeRequest
	for _, x := range contexts {
		req.ContextsHex = append(req.ContextsHex, hex.EncodeToString(x))
	}
	body, _ := json.Marshal(req)
	var p api.PSK
	return &p, c.getJSON(ctx, http.MethodPost, "/v1/psks/"+hex.EncodeToString(identity)+"/finalize", nil, "application/json", body, &p)
}

// RotateSpec describes the next generation of a PSK.
type RotateSpec struct {
	NewIdentity           []byte // empty: random, when the old identity is random
	Overlap               time.Duration
	NotAfter              time.Time
	Provenance            string
	AllowLowEntropy       bool
	AllowIdentityWarnings bool
}

// Rotate makes the next generation. With key nil the daemon generates it and
// Rotate returns it for the peer (the caller zeroes it).
func (c *Client) Rotate(ctx context.Context, identity []byte, spec RotateSpec, key []byte) (newIdentity, newKey []byte, err error) {
	q := url.Values{}
	if len(spec.NewIdentity) > 0 {
		q.Set("identity_hex", hex.EncodeToString(spec.NewIdentity))
	}
	if spec.Overlap > 0 {
		q.Set("overlap", spec.Overlap.String())
	}
	if !spec.NotAfter.IsZero() {
		q.Set("not_after", spec.NotAfter.UTC().Format(time.RFC3339))
	}
	if spec.Provenance != "" {
		q.Set("provenance", spec.Provenance)
	}
	if spec.AllowLowEntropy {
		q.Set("allow_low_entropy", strconv.FormatBool(true))
	}
	if spec.AllowIdentityWarnings {
		q.Set("allow_identity_warnings", strconv.FormatBool(true))
	}
	path := "/v1/psks/" + hex.EncodeToString(identity) + "/rotate"
	if key != nil {
		var p api.PSK
		if err := c.getJSON(ctx, http.MethodPost, path, q, api.ContentTypeKey, key, &p); err != nil {
			return nil, nil, err
		}
		id, err := hex.DecodeString(p.IdentityHex)
		return id, nil, err
	}
	resp, err := c.do(ctx, http.MethodPost, path, q, "", nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	newKey, err = io.ReadAll(io.LimitReader(resp.Body, api.MaxBody))
	if err != nil {
		clear(newKey)
		return nil, nil, fmt.Errorf("read generated key: %w", err)
	}
	if newIdentity, err = hex.DecodeString(resp.Header.Get(api.HeaderIdentity)); err != nil {
		clear(newKey)
		return nil, nil, fmt.Errorf("daemon sent a bad %s header", api.HeaderIdentity)
	}
	return newIdentity, newKey, nil
}
