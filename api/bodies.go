package api

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// Request bodies of the admin endpoints. Identities and contexts travel in
// request bodies, never in the URL: RFC 9258 allows an external identity of
// up to 65535 bytes, twice that in hex, which no request line carries
// (MaxHeaderBytes), while MaxBody is sized for it.

// ContentTypeEnvelope marks a body that carries JSON metadata and raw key
// bytes: a 4-byte big-endian length N, N bytes of a JSON object, then the
// key, raw, to the end of the body. The key is never JSON (docs/API.md).
const ContentTypeEnvelope = "application/vnd.pskvault.envelope"

// IdentityRef names one PSK: exactly one of Identity (UTF-8 text) and
// IdentityHex. It is the body of POST /v1/psks/show and /v1/psks/delete.
type IdentityRef struct {
	Identity    string `json:"identity,omitempty"`
	IdentityHex string `json:"identity_hex,omitempty"`
}

// PSKSpec describes a PSK to import (the envelope's metadata) or create (the
// JSON body of POST /v1/psks/create). Omitted fields take the safe defaults.
type PSKSpec struct {
	Identity    string   `json:"identity,omitempty"`
	IdentityHex string   `json:"identity_hex,omitempty"`
	Client      string   `json:"client,omitempty"`
	Server      string   `json:"server,omitempty"`
	Hash        string   `json:"hash,omitempty"`    // sha256 (default) or sha384
	Targets     []string `json:"targets,omitempty"` // PROTOCOL/KDF; empty: all
	// NotAfter is RFC 3339; empty: no expiry.
	NotAfter string            `json:"not_after,omitempty"`
	Params   map[string]string `json:"params,omitempty"` // backend-specific
	// WrappedKeyBits > 0 (import only) means the key is a PRK wrapped for
	// this node's hardware, made from an EPSK of this many bits.
	WrappedKeyBits int `json:"wrapped_key_bits,omitempty"`
	// RFC 9257 policy (docs/RFC9257.md).
	AllowLowEntropy       bool     `json:"allow_low_entropy,omitempty"`
	AllowPSKKE            bool     `json:"allow_psk_ke,omitempty"`
	AllowEarlyData        bool     `json:"allow_early_data,omitempty"`
	Group                 []string `json:"group,omitempty"`
	NodeContext           bool     `json:"node_context,omitempty"`
	Provenance            string   `json:"provenance,omitempty"`
	RandomIdentity        bool     `json:"random_identity,omitempty"`
	AllowIdentityWarnings bool     `json:"allow_identity_warnings,omitempty"`
	Finalize              bool     `json:"finalize,omitempty"`
	Stack                 string   `json:"stack,omitempty"`
	// Bundle authenticates an import made from a provisioning bundle: the
	// key must verify it, or nothing is kept (docs/BUNDLE.md).
	Bundle *BundleAuth `json:"bundle,omitempty"`
}

// BundleAuth is a provisioning bundle's authenticated text (which never
// holds the key) and its MAC, hex.
type BundleAuth struct {
	Data   string `json:"data"`
	MACHex string `json:"mac_hex"`
}

func (b *BundleAuth) vault() (*vault.BundleAuth, error) {
	if b == nil {
		return nil, nil
	}
	mac, err := decodeHex("bundle.mac_hex", b.MACHex)
	if err != nil {
		return nil, err
	}
	if len(mac) == 0 || b.Data == "" {
		return nil, badRequest("bundle: data and mac_hex are both required")
	}
	return &vault.BundleAuth{Data: []byte(b.Data), MAC: mac}, nil
}

// RotateSpec is the body of POST /v1/psks/rotate: JSON when the vault
// generates the new key, the envelope's metadata when the key is brought.
type RotateSpec struct {
	Identity              string `json:"identity,omitempty"` // the generation to rotate
	IdentityHex           string `json:"identity_hex,omitempty"`
	NewIdentity           string `json:"new_identity,omitempty"` // empty: random, when the old one is
	NewIdentityHex        string `json:"new_identity_hex,omitempty"`
	Overlap               string `json:"overlap,omitempty"` // Go duration, e.g. 72h; empty: 0, the old generation expires now
	NotAfter              string `json:"not_after,omitempty"`
	Provenance            string `json:"provenance,omitempty"`
	AllowLowEntropy       bool   `json:"allow_low_entropy,omitempty"`
	AllowIdentityWarnings bool   `json:"allow_identity_warnings,omitempty"`
	// With an envelope: the key is wrapped for this node's hardware (as
	// for import), backend parameters, and the bundle it came in.
	WrappedKeyBits int               `json:"wrapped_key_bits,omitempty"`
	Params         map[string]string `json:"params,omitempty"`
	Bundle         *BundleAuth       `json:"bundle,omitempty"`
}

// MarshalEnvelope builds an envelope body from metadata and a key. The
// caller wipes the result, which holds the key.
func MarshalEnvelope(meta any, key []byte) ([]byte, error) {
	m, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 4+len(m)+len(key))
	out = binary.BigEndian.AppendUint32(out, uint32(len(m)))
	out = append(out, m...)
	return append(out, key...), nil
}

// errEnvelope marks a malformed envelope.
var errEnvelope = errors.New("malformed envelope")

// ParseEnvelope splits an envelope body into its JSON metadata, decoded
// strictly into meta, and the key, a sub-slice of body.
func ParseEnvelope(body []byte, meta any) (key []byte, err error) {
	if len(body) < 4 {
		return nil, badRequest("%v: %d bytes, shorter than its 4-byte length prefix", errEnvelope, len(body))
	}
	n := binary.BigEndian.Uint32(body)
	if uint64(n) > uint64(len(body)-4) {
		return nil, badRequest("%v: metadata length %d, only %d bytes follow", errEnvelope, n, len(body)-4)
	}
	if err := decodeStrict(bytes.NewReader(body[4:4+n]), meta); err != nil {
		return nil, fmt.Errorf("envelope metadata: %w", err)
	}
	return body[4+n:], nil
}

// decodeStrict reads one JSON object: no unknown fields, no trailing data.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("malformed JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("malformed JSON body: trailing data after the object")
	}
	return nil
}

// readBody reads the whole request body into a buffer the caller wipes.
func readBody(r *http.Request) ([]byte, error) {
	var body bytes.Buffer
	body.Grow(512)
	_, err := body.ReadFrom(r.Body)
	if err != nil {
		clear(body.Bytes()[:body.Cap()])
		return nil, err
	}
	return body.Bytes(), nil
}

// ref decodes an IdentityRef.
func (ref IdentityRef) bytes() ([]byte, error) { return identityOf(ref.Identity, ref.IdentityHex) }

// request converts a spec for the vault.
func (s PSKSpec) request(create bool) (vault.ImportRequest, error) {
	var req vault.ImportRequest
	p := &req.PolicyRequest
	p.AllowLowEntropy, p.AllowPSKKE, p.AllowEarlyData = s.AllowLowEntropy, s.AllowPSKKE, s.AllowEarlyData
	p.NodeContext, p.RandomIdentity = s.NodeContext, s.RandomIdentity
	p.AllowIdentityWarnings, p.Finalize = s.AllowIdentityWarnings, s.Finalize
	p.Group, p.Provenance, p.Stack = s.Group, s.Provenance, s.Stack
	var err error
	if !(s.RandomIdentity && s.Identity == "" && s.IdentityHex == "") {
		if req.Identity, err = identityOf(s.Identity, s.IdentityHex); err != nil {
			return req, err
		}
	}
	req.ClientNode, req.ServerNode = s.Client, s.Server
	if req.Hash, err = importer.ParseHash(s.Hash); err != nil {
		return req, err
	}
	if s.Targets != nil {
		if req.Targets, err = vault.ParseTargets(s.Targets); err != nil {
			return req, err
		}
	}
	if s.NotAfter != "" {
		if req.NotAfter, err = time.Parse(time.RFC3339, s.NotAfter); err != nil {
			return req, badRequest("not_after: want RFC 3339 time, e.g. 2027-01-02T15:04:05Z")
		}
	}
	for k := range s.Params {
		if k == "" || strings.Contains(k, "=") {
			return req, badRequest("params: bad name %q", k)
		}
	}
	req.Params = s.Params
	switch {
	case s.WrappedKeyBits < 0:
		return req, badRequest("wrapped_key_bits: want a positive number of bits")
	case s.WrappedKeyBits > 0 && create:
		return req, badRequest("wrapped_key_bits: only for import")
	case s.WrappedKeyBits > 0:
		req.Wrapped, req.WrappedKeyBits = true, s.WrappedKeyBits
	}
	if s.Bundle != nil && create {
		return req, badRequest("bundle: only for import")
	}
	req.Bundle, err = s.Bundle.vault()
	return req, err
}

// request converts a rotate spec for the vault.
func (s RotateSpec) request() (id []byte, req vault.RotateRequest, err error) {
	if id, err = identityOf(s.Identity, s.IdentityHex); err != nil {
		return nil, req, err
	}
	if s.NewIdentity != "" || s.NewIdentityHex != "" {
		if req.NewIdentity, err = identityOf(s.NewIdentity, s.NewIdentityHex); err != nil {
			return id, req, fmt.Errorf("new identity: %w", err)
		}
	}
	if s.Overlap != "" {
		if req.Overlap, err = time.ParseDuration(s.Overlap); err != nil || req.Overlap < 0 {
			return id, req, badRequest("overlap: want a non-negative duration, e.g. 72h")
		}
	}
	if s.NotAfter != "" {
		if req.NotAfter, err = time.Parse(time.RFC3339, s.NotAfter); err != nil {
			return id, req, badRequest("not_after: want RFC 3339 time, e.g. 2027-01-02T15:04:05Z")
		}
	}
	req.Provenance, req.AllowLowEntropy, req.AllowIdentityWarnings = s.Provenance, s.AllowLowEntropy, s.AllowIdentityWarnings
	if s.WrappedKeyBits < 0 {
		return id, req, badRequest("wrapped_key_bits: want a positive number of bits")
	}
	req.Wrapped, req.WrappedKeyBits, req.Params = s.WrappedKeyBits > 0, s.WrappedKeyBits, s.Params
	req.Bundle, err = s.Bundle.vault()
	return id, req, err
}
