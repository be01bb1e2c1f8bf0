package main

import (
	"encoding/json"
	"io"
	"time"
)

// The --json answers of the verbs that have no record or report of their
// own to print (psk list, show, import, create, revoke, finalize print the
// api.PSK records; check the wire.Report; status and version theirs).
// README.md ("The CLI") lists them; TestJSONEveryVerb decodes each verb's
// answer into these types, refusing unknown fields. None carries key
// material: derive's ipskx is the one field that does.

// initJSON is `pskvault init --json`.
type initJSON struct {
	NodeID   string `json:"node_id"`
	StateDir string `json:"state_dir"`
	Backend  string `json:"backend"`
}

// configCheckJSON is `pskvault config check --json`: ok false with the
// problems (exit status 1) when the file does not pass.
type configCheckJSON struct {
	Config   string          `json:"config"`
	OK       bool            `json:"ok"`
	Problems []configProblem `json:"problems"`
}

type configProblem struct {
	Line    int    `json:"line"`
	Message string `json:"message"`
}

// agentJSON is `pskvault agent --check --json` and `--once --json`.
type agentJSON struct {
	Config  string `json:"config"`
	Mode    string `json:"mode"` // "check" or "once"
	Outputs int    `json:"outputs"`
}

// demoJSON is `pskvault demo --json` (the narrative goes to stderr).
type demoJSON struct {
	Nodes                 []string      `json:"nodes"`
	Identity              string        `json:"identity"`
	Derived               []demoDerived `json:"derived"`
	ThirdNodeRefused      bool          `json:"third_node_refused"`
	ForeignContextRefused bool          `json:"foreign_context_refused"`
	TLSHandshake          string        `json:"tls_handshake"`  // "ok", "skipped" (--no-tls) or "no openssl"
	Kept                  string        `json:"kept,omitempty"` // the directory, with --keep
}

type demoDerived struct {
	Protocol         string `json:"protocol"`
	KDF              string `json:"kdf"`
	ImportedIdentity string `json:"imported_identity"` // hex
	Match            bool   `json:"match"`             // both nodes derived the same ipskx
}

// fleetRunJSON is `pskvault fleet provision|rotate --json`.
type fleetRunJSON struct {
	Action     string `json:"action"` // "provision" or "rotate"
	Planned    int    `json:"planned"`
	Issued     int    `json:"issued"`
	Completed  int    `json:"completed"`
	Already    int    `json:"already"`
	Discarded  int    `json:"discarded"`
	Out        string `json:"out"`
	DurationMS int64  `json:"duration_ms"`
}

// fleetStatusJSON is `pskvault fleet status --json`.
type fleetStatusJSON struct {
	Planned   int         `json:"planned"`
	Issued    int         `json:"issued"`
	Due       int         `json:"due"`
	NotIssued int         `json:"not_issued"`
	Unplanned int         `json:"unplanned"`
	Links     []fleetLink `json:"links"`
}

type fleetLink struct {
	Link       string     `json:"link"`
	State      string     `json:"state"` // "issued", "due for rotation", "not issued"
	Generation int        `json:"generation,omitempty"`
	NotAfter   *time.Time `json:"not_after,omitempty"`
	KCV        string     `json:"key_check_value,omitempty"`
}

// sweepJSON is `pskvault psk sweep --json`.
type sweepJSON struct {
	SweptHex []string `json:"swept_hex"`
}

// deleteJSON is `pskvault psk delete --json`.
type deleteJSON struct {
	DeletedHex string `json:"deleted_hex"`
}

// rotateJSON is `pskvault psk rotate --json`.
type rotateJSON struct {
	IdentityHex    string `json:"identity_hex"`
	NewIdentityHex string `json:"new_identity_hex"`
	Overlap        string `json:"overlap"`
	KCV            string `json:"key_check_value"`
	Out            string `json:"out,omitempty"`    // the file for the peer ("-": standard output)
	Format         string `json:"format,omitempty"` // what --out got: bundle or hex
}

// wrappingKeyJSON is `pskvault pkcs11 import-wrapping-key --json`.
type wrappingKeyJSON struct {
	Label string `json:"label"`
}

// parentPubJSON is `pskvault tpm parent-pub --json`.
type parentPubJSON struct {
	Out  string `json:"out"`
	Name string `json:"name"` // the parent's TPM name, hex
}

// wrapJSON is `pskvault wrap --json`.
type wrapJSON struct {
	Out     string `json:"out"`
	Target  string `json:"target"` // tpm or pkcs11
	KeyBits int    `json:"key_bits"`
	Hash    string `json:"hash"`
}

func writeJSON(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
