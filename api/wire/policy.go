package wire

import (
	"time"
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
	KCV           string    `json:"kcv,omitempty"` // key check value (docs/BUNDLE.md)
	RotatedFrom   string    `json:"rotated_from_hex,omitempty"`
	RotatedTo     string    `json:"rotated_to_hex,omitempty"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	RevokeReason  string    `json:"revoke_reason,omitempty"`
	PolicyWarning []string  `json:"warnings,omitempty"` // identity and entropy findings
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
	CodeBundleMAC       = "bundle_mac" // a provisioning bundle that does not authenticate
	CodeMustViolation   = "must_violation"
)

// RevokeRequest is POST /v1/psks/revoke.
type RevokeRequest struct {
	Identity    string `json:"identity,omitempty"`
	IdentityHex string `json:"identity_hex,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// FinalizeRequest is POST /v1/psks/finalize. ContextsHex lists the
// contexts to keep for a PSK without a node-identifier context (default:
// the empty context only).
type FinalizeRequest struct {
	Identity    string   `json:"identity,omitempty"`
	IdentityHex string   `json:"identity_hex,omitempty"`
	ContextsHex []string `json:"contexts_hex,omitempty"`
}

// SweepResponse answers POST /v1/sweep: the PSKs whose expired keys were
// destroyed.
type SweepResponse struct {
	SweptHex []string `json:"swept_hex"`
}
