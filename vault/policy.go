package vault

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// RFC 9257 policy errors; match with errors.Is.
var (
	// ErrLowEntropy: an imported key looks guessable (RFC 9257 section 4.2,
	// section 6 recommendation 1). Import it anyway only with AllowLowEntropy.
	ErrLowEntropy = errors.New("key looks low-entropy (RFC 9257 section 4.2: PSKs SHOULD carry at least 128 bits of entropy)")
	// ErrKeyReused: the same key is already held for another PSK (RFC 9257
	// section 4.1, section 6 recommendation 2: one key, two nodes).
	ErrKeyReused = errors.New("key already held by this vault for another PSK (RFC 9257 section 6 rec. 2: a PSK MUST be restricted to one client and one server node)")
	// ErrGroup: a group PSK request is malformed or the caller or peer is
	// not a member.
	ErrGroup = errors.New("group PSK policy")
	// ErrContext: the importer context is not the canonical node-identifier
	// context the PSK requires.
	ErrContext = errors.New("importer context does not match the PSK's node-identifier context")
	// ErrIdentity: the identity breaks the vault's identity rules (RFC 9257
	// section 6.1.1, and section 7 for privacy warnings); see CheckIdentity.
	ErrIdentity = errors.New("identity refused")
	// ErrFinalized: the main key was destroyed by finalize; only the imported
	// keys kept then can be handed out (RFC 9257 section 6 rec. 4).
	ErrFinalized = errors.New("PSK is finalized: its main key was destroyed")
)

// Policy is the RFC 9257 part of a PSK record. It is embedded in PSK, so its
// fields sit at the top level of the JSON (API answers, and records written
// before the binary form of codec.go); every zero value is the safe
// default, so records written before these fields existed read as
// pairwise, DHE-required, no early data, not finalized.
type Policy struct {
	// PSKKE allows psk_ke (PSK-only key exchange). false: psk_dhe_ke is
	// required (RFC 9257 section 6 rec. 1, section 8).
	PSKKE bool `json:"psk_ke_allowed,omitempty"`
	// EarlyData allows 0-RTT data under this PSK (RFC 9257 section 8: the
	// client random is then the only fresh entropy; no forward secrecy).
	EarlyData bool `json:"early_data_allowed,omitempty"`
	// Group lists the member nodes of a group PSK, sorted; empty means
	// pairwise (ClientNode, ServerNode). RFC 9257 section 4.1.
	Group []string `json:"group,omitempty"`
	// NodeContext requires the RFC 9258 context to be the canonical
	// node-identifier context (NodeContext func). Always true for groups.
	NodeContext bool `json:"node_context,omitempty"`
	// LowEntropy records that the key was imported with AllowLowEntropy
	// although AssessEntropy flagged it; `check` reports it forever after.
	// Which detector fired is deliberately not kept (it would help guess
	// the key); EntropyFindings only notes keys that were never checked.
	LowEntropy      bool     `json:"low_entropy,omitempty"`
	EntropyFindings []string `json:"entropy_findings,omitempty"`
	// Provenance says where the key came from: generated where, by what,
	// or imported from what source.
	Provenance string `json:"provenance,omitempty"`
	// Fingerprint is a keyed fingerprint of the EPSK (see fingerprint in
	// aux.go) used only to detect reuse; empty for wrapped imports.
	Fingerprint []byte `json:"fingerprint,omitempty"`
	// KCV is the key check value (kcv.go), hex; empty for records made
	// before it existed.
	KCV string `json:"kcv,omitempty"`
	// IdentityFindings are the warnings the identity drew at import.
	IdentityFindings []Finding `json:"identity_findings,omitempty"`
	// RandomIdentity: the vault generated the identity (RandomIdentity func).
	RandomIdentity bool `json:"random_identity,omitempty"`
	// Lifecycle (lifecycle.go).
	Generation   int       `json:"generation,omitempty"` // 0 reads as 1
	RotatedFrom  []byte    `json:"rotated_from,omitempty"`
	RotatedTo    []byte    `json:"rotated_to,omitempty"`
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
	RevokeReason string    `json:"revoke_reason,omitempty"`
	// Finalized holds the imported keys kept by finalize, sealed under the
	// vault's auxiliary backend key; FinalizedAt is when the main key was
	// destroyed.
	Finalized   []Sealed  `json:"finalized,omitempty"`
	FinalizedAt time.Time `json:"finalized_at,omitzero"`
}

// IsGroup reports whether the PSK is a group PSK.
func (p *Policy) IsGroup() bool { return len(p.Group) > 0 }

// IsFinalized reports whether the main key has been destroyed.
func (p *Policy) IsFinalized() bool { return !p.FinalizedAt.IsZero() }

func (p Policy) clone() Policy {
	c := p
	c.Group = slices.Clone(p.Group)
	c.EntropyFindings = slices.Clone(p.EntropyFindings)
	c.Fingerprint = slices.Clone(p.Fingerprint)
	c.IdentityFindings = slices.Clone(p.IdentityFindings)
	c.RotatedFrom = slices.Clone(p.RotatedFrom)
	c.RotatedTo = slices.Clone(p.RotatedTo)
	c.Finalized = slices.Clone(p.Finalized)
	return c
}

// PolicyRequest is the RFC 9257 part of an import or create request.
type PolicyRequest struct {
	// AllowLowEntropy imports a key that AssessEntropy flags; the PSK is
	// marked LowEntropy for good.
	AllowLowEntropy bool
	// AllowPSKKE allows psk_ke; AllowEarlyData allows 0-RTT.
	AllowPSKKE     bool
	AllowEarlyData bool
	// Group makes a group PSK with these members (this node among them);
	// ClientNode and ServerNode must then be empty.
	Group []string
	// NodeContext requires the canonical node-identifier context.
	NodeContext bool
	// Provenance describes where an imported key comes from ("key file",
	// "peer node-a", ...); the vault prefixes what it knows.
	Provenance string
	// RandomIdentity has the vault generate the identity; Identity must
	// then be empty.
	RandomIdentity bool
	// AllowIdentityWarnings imports an identity CheckIdentity refuses
	// (except rules that can never be waived).
	AllowIdentityWarnings bool
	// Finalize derives and seals the imported keys for every allowed
	// target right after import, then destroys the main key.
	Finalize bool
	// Stack, when set, checks the identity and key against that TLS
	// stack's limits (stack.go).
	Stack string
}

// nodeContextLabel starts every canonical node-identifier context.
const nodeContextLabel = "pskvault nodes v1"

// NodeContext is the canonical RFC 9258 context naming both endpoints of one
// connection, in role order:
//
//	u8 len | "pskvault nodes v1" | u8 len | client node id | u8 len | server node id
//
// Node ids are 1-64 ASCII characters (CheckNodeID), so every length fits in
// one byte and the encoding is injective. Both peers build the same bytes
// from the same two names; a reflected (Selfie) or rerouted connection has
// different roles or endpoints and so derives a different imported PSK
// (RFC 9258 Appendix A, RFC 9257 section 4.1).
func NodeContext(client, server string) ([]byte, error) {
	if err := CheckNodeID(client); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if err := CheckNodeID(server); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	b := make([]byte, 0, 3+len(nodeContextLabel)+len(client)+len(server))
	for _, s := range []string{nodeContextLabel, client, server} {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b, nil
}

// ParseNodeContext decodes a canonical node-identifier context.
func ParseNodeContext(b []byte) (client, server string, err error) {
	var parts []string
	for len(b) > 0 {
		n := int(b[0])
		if n == 0 || len(b) < 1+n {
			return "", "", fmt.Errorf("%w: malformed node-identifier context", ErrContext)
		}
		parts = append(parts, string(b[1:1+n]))
		b = b[1+n:]
	}
	if len(parts) != 3 || parts[0] != nodeContextLabel {
		return "", "", fmt.Errorf("%w: not a %q context", ErrContext, nodeContextLabel)
	}
	if CheckNodeID(parts[1]) != nil || CheckNodeID(parts[2]) != nil {
		return "", "", fmt.Errorf("%w: bad node id in context", ErrContext)
	}
	return parts[1], parts[2], nil
}

// checkGroup validates a group request: at least three distinct valid
// members (two is a pairwise PSK), this node among them, no pairwise nodes.
func (v *Vault) checkGroup(req *ImportRequest) error {
	if req.ClientNode != "" || req.ServerNode != "" {
		return fmt.Errorf("%w: give either --group or --client/--server, not both", ErrGroup)
	}
	seen := map[string]bool{}
	var members []string
	for _, m := range req.Group {
		m = strings.TrimSpace(m)
		if err := CheckNodeID(m); err != nil {
			return fmt.Errorf("%w: member: %w", ErrGroup, err)
		}
		if seen[m] {
			return fmt.Errorf("%w: member %s listed twice", ErrGroup, m)
		}
		seen[m] = true
		members = append(members, m)
	}
	if len(members) < 3 {
		return fmt.Errorf("%w: a group needs at least 3 members; for 2 nodes make a pairwise PSK with --client and --server", ErrGroup)
	}
	if !seen[v.cfg.NodeID] {
		return fmt.Errorf("%w: PSK is for group %s, this vault is node %s", ErrNotParty, strings.Join(members, ","), v.cfg.NodeID)
	}
	slices.Sort(members)
	req.Group = members
	req.NodeContext = true // RFC 9258's accommodation is not optional for groups
	return nil
}

// deriveContext applies the node-identifier rules to a derivation and
// returns the context to use and this node's role. For a group PSK the
// request must name the peer and this node's role; both must be members.
// For a PSK with NodeContext the context defaults to the canonical one and
// any other context is refused.
func (v *Vault) deriveContext(p *PSK, req DeriveRequest) ([]byte, string, error) {
	me := v.cfg.NodeID
	role := req.Role
	var client, server string
	if p.IsGroup() {
		if req.Peer == "" && len(req.Context) > 0 {
			// A TLS server looking up a received identity: the node
			// context on the wire names both ends.
			if c, s, err := ParseNodeContext(req.Context); err == nil {
				switch {
				case me == c && role != "server":
					role, req.Peer = "client", s
				case me == s && role != "client":
					role, req.Peer = "server", c
				}
			}
		}
		if req.Peer == "" || (role != "client" && role != "server") {
			return nil, "", fmt.Errorf("%w: deriving a group PSK needs the peer node and this node's role (client or server)", ErrGroup)
		}
		if !slices.Contains(p.Group, req.Peer) {
			return nil, "", fmt.Errorf("%w: peer %s is not a member of group %s", ErrGroup, req.Peer, strings.Join(p.Group, ","))
		}
		if req.Peer == me {
			return nil, "", fmt.Errorf("%w: peer %s is this node (a node never talks to itself under a PSK)", ErrGroup, req.Peer)
		}
		client, server = me, req.Peer
		if role == "server" {
			client, server = req.Peer, me
		}
	} else {
		client, server = p.ClientNode, p.ServerNode
		derived := "server"
		if p.ClientNode == me {
			derived = "client"
		}
		if req.Peer != "" && req.Peer != p.ClientNode && req.Peer != p.ServerNode {
			return nil, "", fmt.Errorf("%w: peer %s is not party to this PSK (between %s and %s)", ErrNotParty, req.Peer, p.ClientNode, p.ServerNode)
		}
		if role != "" && role != derived {
			return nil, "", fmt.Errorf("%w: this node is the %s of this PSK, not the %s", ErrNotParty, derived, role)
		}
		role = derived
	}
	if !p.NodeContext {
		return req.Context, role, nil
	}
	want, err := NodeContext(client, server)
	if err != nil {
		return nil, "", err
	}
	if len(req.Context) > 0 && !bytes.Equal(req.Context, want) {
		return nil, "", fmt.Errorf("%w: want the context for client %s and server %s (%x); omit the context to get it", ErrContext, client, server, want)
	}
	return want, role, nil
}
