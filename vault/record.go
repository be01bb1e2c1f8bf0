package vault

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pskvault/pskvault/importer"
)

// State is a PSK's lifecycle state.
type State string

// PSK states.
const (
	StateActive  State = "active"
	StateRevoked State = "revoked"
)

// Target is one (target_protocol, target_kdf) pair a PSK may be imported for.
type Target struct {
	Protocol importer.Protocol `json:"protocol"`
	KDF      importer.KDF      `json:"kdf"`
}

func (t Target) String() string { return t.Protocol.String() + "/" + t.KDF.String() }

// AllTargets is every target the importer supports; the default allow list.
var AllTargets = []Target{
	{importer.TLS13, importer.HKDFSHA256},
	{importer.TLS13, importer.HKDFSHA384},
	{importer.DTLS13, importer.HKDFSHA256},
	{importer.DTLS13, importer.HKDFSHA384},
}

// PSK is a vault record. It holds no key bytes: the backend handle names a
// key the backend keeps.
type PSK struct {
	Identity   []byte        `json:"identity"`    // external_identity, compared byte by byte
	Hash       importer.Hash `json:"hash"`        // the EPSK's hash
	KeyBits    int           `json:"key_bits"`    // EPSK length in bits
	ClientNode string        `json:"client_node"` // the one client node (RFC 9257 section 4.1)
	ServerNode string        `json:"server_node"` // the one server node
	Targets    []Target      `json:"targets"`     // allowed import targets
	Created    time.Time     `json:"created"`
	NotAfter   time.Time     `json:"not_after,omitzero"` // zero: no expiry
	State      State         `json:"state"`
	Origin     string        `json:"origin"` // "generated" or "imported"
	Backend    string        `json:"backend"`
	// Handle is opaque, backend-defined. In vault.db it is kept only
	// inside Sealed (keyslots.go): the "handle" field is empty there
	// except in records written before issue 12, which Open converts.
	Handle []byte `json:"handle,omitempty"`
	// KeySlot is the slot of vault.keys holding the data key that Sealed
	// (the handle and the finalized boxes) is sealed under; 0: none.
	KeySlot uint32 `json:"key_slot,omitempty"`
	Sealed  []byte `json:"sealed,omitempty"`
	// DeletePending is when a delete began: the record stays, refusing
	// derivation, until its key is destroyed (by psk delete, or by the
	// reconciliation at the next start). Zero: no delete under way.
	DeletePending time.Time `json:"delete_pending_since,omitzero"`
	// KeyMissing is when the reconciliation at start found the backend no
	// longer holds the key Handle names; zero while the key is there.
	KeyMissing time.Time `json:"key_missing_since,omitzero"`
	Policy               // RFC 9257 policy and lifecycle (policy.go); zero value is the safe default

	// disk is the record as read from vault.db (nil: not read from it):
	// a change checks that the stored record is still this one
	// (Vault.replace). opened says its sealed secret was opened (or it
	// has none): only such a record may be written back (Vault.store).
	disk   []byte
	opened bool
}

// IdentityHex is the identity in lowercase hex, the record's stable name.
func (p *PSK) IdentityHex() string { return hex.EncodeToString(p.Identity) }

// Allows reports whether the PSK may be imported for t.
func (p *PSK) Allows(t Target) bool {
	for _, x := range p.Targets {
		if x == t {
			return true
		}
	}
	return false
}

// Party reports whether node is the PSK's client or server node.
func (p *PSK) Party(node string) bool {
	return node == p.ClientNode || node == p.ServerNode || slices.Contains(p.Group, node)
}

// Expired reports whether the PSK is past its not-after time at now.
func (p *PSK) Expired(now time.Time) bool { return !p.NotAfter.IsZero() && !now.Before(p.NotAfter) }

func (p *PSK) clone() *PSK {
	c := *p
	c.Identity = append([]byte{}, p.Identity...)
	c.Targets = append([]Target{}, p.Targets...)
	c.Handle = append([]byte{}, p.Handle...)
	c.Sealed = append([]byte(nil), p.Sealed...)
	c.Policy = p.Policy.clone()
	return &c
}

// ParseTargets parses "tls1.3/sha256,dtls1.3/sha384"; empty means AllTargets.
func ParseTargets(specs []string) ([]Target, error) {
	if len(specs) == 0 {
		return append([]Target{}, AllTargets...), nil
	}
	var out []Target
	for _, s := range specs {
		ps, ks, ok := strings.Cut(s, "/")
		if !ok {
			return nil, fmt.Errorf("%w: target %q: want PROTOCOL/KDF, e.g. tls1.3/sha256", ErrInvalid, s)
		}
		p, err := importer.ParseProtocol(ps)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", s, err)
		}
		k, err := importer.ParseKDF(ks)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", s, err)
		}
		t := Target{p, k}
		dup := false
		for _, x := range out {
			dup = dup || x == t
		}
		if !dup {
			out = append(out, t)
		}
	}
	return out, nil
}
