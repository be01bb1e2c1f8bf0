package wire

import (
	"fmt"
	"time"
)

// BackendInfo is a status answer's backend (vault.BackendInfo on the wire).
type BackendInfo struct {
	Name        string   `json:"name"`                  // "soft", "tpm", "pkcs11"
	Description string   `json:"description,omitempty"` // device, token or file in use (admin socket only)
	Hardware    bool     `json:"hardware"`              // keys are held by hardware
	HashNames   []string `json:"hashes"`                // supported EPSK hashes
}

// Report answers GET /v1/check: the whole vault's RFC 9257 audit
// (vault.Report on the wire).
type Report struct {
	Node           string          `json:"node"`
	PSKs           []Audit         `json:"psks"`
	Must           int             `json:"must_violations"`
	Should         int             `json:"should_violations"`
	Warn           int             `json:"warnings"`
	Errors         int             `json:"consistency_errors"`
	Reconciliation *Reconciliation `json:"reconciliation,omitempty"`
	// NextCursor, when set, asks for the next page (PageRequest): the
	// counts above are then this page's.
	NextCursor string `json:"next_cursor,omitempty"`
}

// OK reports whether no RFC 9257 MUST is violated.
func (r *Report) OK() bool { return r.Must == 0 }

// Audit is one PSK's audit (vault.Audit on the wire).
type Audit struct {
	IdentityHex  string    `json:"identity_hex"`
	Identity     string    `json:"identity,omitempty"`
	Kind         string    `json:"kind"`
	Nodes        string    `json:"nodes"`
	KeyBits      int       `json:"key_bits"`
	Entropy      string    `json:"entropy"`
	DHERequired  bool      `json:"psk_dhe_ke_required"`
	EarlyData    bool      `json:"early_data_allowed"`
	ImporterOnly bool      `json:"importer_only"`
	NodeContext  bool      `json:"node_context"`
	Finalized    bool      `json:"finalized"`
	State        string    `json:"state"`
	NotAfter     time.Time `json:"not_after,omitzero"`
	Findings     []Finding `json:"findings"`
}

// Finding levels (vault.Level*).
const (
	LevelMust   = "MUST"
	LevelShould = "SHOULD"
	LevelWarn   = "warn"
	LevelInfo   = "info"
	LevelError  = "error"
)

// Finding is one observation about a PSK (vault.Finding on the wire).
type Finding struct {
	Rule    string `json:"rule"`
	Section string `json:"section"`
	Level   string `json:"level"`
	Message string `json:"message"`
}

func (f Finding) String() string {
	return fmt.Sprintf("%s (RFC 9257 section %s, %s)", f.Message, f.Section, f.Level)
}

// Reconciliation is what the daemon found and did about records and
// backend keys at start (vault.Reconciliation on the wire).
type Reconciliation struct {
	CreatesUndone   int      `json:"creates_undone"`
	DeletesFinished int      `json:"deletes_finished"`
	HandlesCleared  int      `json:"handles_cleared"`
	KeysChecked     int      `json:"keys_checked"`
	KeysMissing     []string `json:"keys_missing,omitempty"`
	Orphans         []string `json:"orphaned_keys,omitempty"`
	Problems        []string `json:"problems,omitempty"`
}
