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

func bundleAuthOf(b *BundleAuth) (*vault.BundleAuth, error) {
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
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err // answered 413
		}
		// A body shorter than its Content-Length, or a broken chunked
		// encoding, is the client's fault: 400, not 500.
		return nil, badRequest("request body: %v", err)
	}
	return body.Bytes(), nil
}

// ref decodes an IdentityRef.
func refBytes(ref IdentityRef) ([]byte, error) { return identityOf(ref.Identity, ref.IdentityHex) }

// request converts a spec for the vault.
func specRequest(s PSKSpec, create bool) (vault.ImportRequest, error) {
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
	req.Bundle, err = bundleAuthOf(s.Bundle)
	return req, err
}

// request converts a rotate spec for the vault.
func rotateRequest(s RotateSpec) (id []byte, req vault.RotateRequest, err error) {
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
	req.Bundle, err = bundleAuthOf(s.Bundle)
	return id, req, err
}
