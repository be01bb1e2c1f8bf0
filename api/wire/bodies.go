package wire

import (
	"encoding/binary"
	"encoding/json"
)

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
