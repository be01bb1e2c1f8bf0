package wire

import (
	"time"
)

// Version is pskvault's version.
const Version = "0.1.0-dev"

// MaxBody is the largest request body the server reads: 288 KiB. RFC 9258
// allows an external identity of 65535 bytes, 131070 hex digits; the
// largest body names two of them (a rotate: the old generation and the
// new), and 32 KiB are left for every other field (group members,
// provenance, backend parameters) and the key or wrapped blob. A derive,
// lookup or offers whose identity and context fill a 65535-byte
// ImportedIdentity needs about 131 KB.
const MaxBody = 288 << 10

// ContentTypeKey marks a body that is raw key material.
const ContentTypeKey = "application/octet-stream"

// HeaderIdentity carries the hex identity of a PSK created by POST /v1/psks/create.
const HeaderIdentity = "Pskvault-Identity-Hex"

// Status is GET /v1/status.
type Status struct {
	Version string      `json:"version"`
	NodeID  string      `json:"node_id"`
	Backend BackendInfo `json:"backend"`
	PSKs    int         `json:"psks"`
	// Problems (admin socket only) lists what keeps the daemon from full
	// service: an audit log that cannot be written, a backend stalled past
	// a request's deadline, a compaction of vault.db still pending.
	Problems []string `json:"problems,omitempty"`
	// PSKsByState and NextExpiry (admin socket only) are the records by
	// state ("active", "expired": active but past not_after, "revoked")
	// and the earliest not_after still ahead among active records (absent
	// when none has one), from counts the vault keeps: no record is read.
	PSKsByState map[string]int `json:"psks_by_state,omitempty"`
	NextExpiry  *time.Time     `json:"next_expiry,omitempty"`
}

// PSK is a PSK record as the API shows it: no key bytes, no backend handle.
type PSK struct {
	IdentityHex string    `json:"identity_hex"`
	Identity    string    `json:"identity,omitempty"` // when the identity is valid UTF-8
	Hash        string    `json:"hash"`
	KeyBits     int       `json:"key_bits"`
	ClientNode  string    `json:"client_node"`
	ServerNode  string    `json:"server_node"`
	Targets     []string  `json:"targets"`
	Created     time.Time `json:"created"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	State       string    `json:"state"`
	Origin      string    `json:"origin"`
	Backend     string    `json:"backend"`
	// DeletePending: a delete began but the key is not destroyed yet;
	// KeyMissing: the backend no longer holds the key (found at start).
	DeletePending time.Time `json:"delete_pending_since,omitzero"`
	KeyMissing    time.Time `json:"key_missing_since,omitzero"`
	PSKPolicy               // RFC 9257 policy (policy.go)
}

// PSKList is GET /v1/psks.
type PSKList struct {
	PSKs []PSK `json:"psks"`
	// NextCursor, when set, asks for the next page (PageRequest); an
	// answer without it is the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// DeriveRequest is POST /v1/derive. Exactly one of Identity (UTF-8 text) and
// IdentityHex names the PSK.
type DeriveRequest struct {
	Identity    string `json:"identity,omitempty"`
	IdentityHex string `json:"identity_hex,omitempty"`
	ContextHex  string `json:"context_hex,omitempty"`
	Protocol    string `json:"protocol"` // "tls1.3" or "dtls1.3"
	KDF         string `json:"kdf"`      // "sha256" or "sha384"
	// Peer and Role (this node's, "client" or "server"): required for group
	// PSKs, checked when given for pairwise ones (docs/RFC9257.md).
	Peer string `json:"peer,omitempty"`
	Role string `json:"role,omitempty"`
}

// DeriveResponse is the answer to POST /v1/derive. IPSKX is the one JSON
// field in the protocol that carries key material.
type DeriveResponse struct {
	ImportedIdentity string    `json:"imported_identity"` // hex of the serialized ImportedIdentity
	IPSKX            string    `json:"ipskx"`             // hex of the imported PSK
	IdentityHex      string    `json:"identity_hex"`
	ContextHex       string    `json:"context_hex"`
	Protocol         string    `json:"protocol"`
	KDF              string    `json:"kdf"`
	Hash             string    `json:"hash"`
	Role             string    `json:"role"`
	NotAfter         time.Time `json:"not_after,omitzero"`
	PSKPolicy                  // what the TLS stack must enforce (policy.go)
}

// Error is every non-2xx answer.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// A refused batch import (CodeBatchRefused) also says how many
	// entries were read and what was wrong with which.
	Read      int               `json:"read,omitempty"`
	Entries   []BatchEntryError `json:"entries,omitempty"`
	Truncated bool              `json:"entries_truncated,omitempty"`
}

// Error codes.
const (
	CodeBadRequest         = "bad_request"
	CodeBadHex             = "bad_hex"
	CodeTooLarge           = "too_large"
	CodeNotFound           = "not_found"
	CodeExists             = "exists"
	CodeKeyTooShort        = "key_too_short"
	CodeNotParty           = "not_party"
	CodeSameNode           = "same_node"
	CodeRevoked            = "revoked"
	CodeExpired            = "expired"
	CodeTargetNotAllowed   = "target_not_allowed"
	CodeUnknownProtocol    = "unknown_protocol"
	CodeLegacyProtocol     = "legacy_protocol"
	CodeUnknownKDF         = "unknown_kdf"
	CodeUnknownHash        = "unknown_hash"
	CodeUnsupported        = "unsupported"
	CodeKeyPolicy          = "key_policy"
	CodeUnavailable        = "backend_unavailable"
	CodeKeyMissing         = "key_missing"          // 410: the record names a key the backend no longer holds
	CodeCompact            = "compaction_failed"    // 500, or 507 on a full disk: the change is done; destroyed records may linger in freed pages until the next compaction
	CodeNoSpace            = "insufficient_storage" // 507: the state file system is full; nothing was changed
	CodeTooManyConnections = "too_many_connections" // 503: the connection was over a cap; it is closed after this answer
	CodeAuditUnavailable   = "audit_unavailable"    // 503: the audit line could not be written, so the request was refused
	CodeInternal           = "internal"
	CodeForbidden          = "forbidden"         // the admin socket refused the caller
	CodeNoKey              = "no_key"            // lookup or offers: nothing for this caller and identity
	CodeIdentityTooLong    = "identity_too_long" // RFC 9258 limits: ImportedIdentity or external identity over 65535 bytes
)

// LookupRequest is POST /v1/lookup, for a TLS server: IdentityHex is the
// PskIdentity.identity received in a ClientHello, in hex. It is decoded
// strictly as an RFC 9258 ImportedIdentity. ContextHex, Protocol and KDF,
// when given, are what the server expects, and must match byte for byte.
type LookupRequest struct {
	IdentityHex string  `json:"identity_hex"`
	ContextHex  *string `json:"context_hex,omitempty"`
	Protocol    string  `json:"protocol,omitempty"`
	KDF         string  `json:"kdf,omitempty"`
}

// OffersRequest is POST /v1/offers, for a TLS client: the imported PSKs to
// offer to server node Server, for one context and target.
type OffersRequest struct {
	Server     string `json:"server"`
	ContextHex string `json:"context_hex,omitempty"`
	Protocol   string `json:"protocol"`
	KDF        string `json:"kdf"`
}

// Offer is one (imported identity, ipskx) pair a client offers, with the
// same policy fields as a derive or lookup answer (psk_dhe_ke_required,
// early_data_allowed, low_entropy, generation, ...): what the TLS stack must
// enforce for this key.
type Offer struct {
	IdentityHex      string    `json:"identity_hex"`      // external identity
	ImportedIdentity string    `json:"imported_identity"` // PskIdentity.identity to send, hex
	IPSKX            string    `json:"ipskx"`             // the key, hex
	ContextHex       string    `json:"context_hex"`       // the RFC 9258 context used (node context filled in)
	Protocol         string    `json:"protocol"`
	KDF              string    `json:"kdf"`
	Hash             string    `json:"hash"`
	NotAfter         time.Time `json:"not_after,omitzero"`
	PSKPolicy                  // what the TLS stack must enforce (policy.go)
}

// OfferList answers POST /v1/offers; empty when nothing matches. Offers
// come newest generation first (then most recently created, then by
// identity), so a client that takes the first offer moves to a rotated
// link's new generation as soon as it exists, while the old one stays
// listed (and derivable) until its overlap ends.
type OfferList struct {
	Offers []Offer `json:"offers"`
}
