package vault

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Audit is one PSK's RFC 9257 audit: the facts `pskvault check` tabulates
// and the findings against them.
type Audit struct {
	IdentityHex string `json:"identity_hex"`
	Identity    string `json:"identity,omitempty"`
	Kind        string `json:"kind"` // "pairwise" or "group"
	Nodes       string `json:"nodes"`
	KeyBits     int    `json:"key_bits"`
	Entropy     string `json:"entropy"` // where the key's entropy comes from
	DHERequired bool   `json:"psk_dhe_ke_required"`
	EarlyData   bool   `json:"early_data_allowed"`
	// ImporterOnly: the vault hands this PSK to TLS stacks only as RFC 9258
	// imported keys (ipskx), never the EPSK or the PRK: true for every
	// record that can still be derived, by construction, false for a
	// revoked one (nothing is handed out). It is about this vault only: the
	// peer holds the EPSK too, and a stack without an importer uses the
	// imported key as a plain external PSK ("ext binder").
	ImporterOnly bool      `json:"importer_only"`
	NodeContext  bool      `json:"node_context"`
	Finalized    bool      `json:"finalized"`
	State        string    `json:"state"`
	NotAfter     time.Time `json:"not_after,omitzero"`
	Findings     []Finding `json:"findings"`
}

// Report is the whole vault's audit.
type Report struct {
	Node   string  `json:"node"`
	PSKs   []Audit `json:"psks"`
	Must   int     `json:"must_violations"`
	Should int     `json:"should_violations"`
	Warn   int     `json:"warnings"`
	// Errors counts where the records and the backend disagree: findings
	// of LevelError, orphaned keys and what the reconciliation at start
	// could not do (Reconciliation).
	Errors         int             `json:"consistency_errors"`
	Reconciliation *Reconciliation `json:"reconciliation,omitempty"`
}

// OK reports whether no RFC 9257 MUST is violated.
func (r *Report) OK() bool { return r.Must == 0 }

// add appends one PSK's audit and counts its findings by level.
func (r *Report) add(a Audit) {
	for _, f := range a.Findings {
		switch f.Level {
		case LevelMust:
			r.Must++
		case LevelShould:
			r.Should++
		case LevelWarn:
			r.Warn++
		case LevelError:
			r.Errors++
		}
	}
	r.PSKs = append(r.PSKs, a)
}

// Check audits every PSK against RFC 9257, and reports where the records and
// the backend disagreed at start (reconcile.go). It reads records only, a
// page at a time (CheckPage), but its report holds every record's audit:
// for a vault of any size use CheckPage.
func (v *Vault) Check() (*Report, error) {
	var after []byte
	var all *Report
	for {
		r, next, err := v.CheckPage(after, eachPage)
		if err != nil {
			return nil, err
		}
		if all == nil {
			all = r
		} else {
			all.PSKs = append(all.PSKs, r.PSKs...)
			all.Must, all.Should, all.Warn, all.Errors = all.Must+r.Must, all.Should+r.Should, all.Warn+r.Warn, all.Errors+r.Errors
		}
		if next == nil {
			return all, nil
		}
		after = next
	}
}

func (v *Vault) audit(p *PSK, fps map[string][][]byte, known skeletons, now time.Time) Audit {
	a := Audit{
		IdentityHex:  p.IdentityHex(),
		Kind:         "pairwise",
		Nodes:        fmt.Sprintf("%s -> %s", p.ClientNode, p.ServerNode),
		KeyBits:      p.KeyBits,
		DHERequired:  !p.PSKKE,
		EarlyData:    p.EarlyData,
		ImporterOnly: p.State != StateRevoked,
		NodeContext:  p.NodeContext,
		Finalized:    p.IsFinalized(),
		State:        string(p.State),
		NotAfter:     p.NotAfter,
		Findings:     []Finding{},
	}
	if utf8.Valid(p.Identity) {
		a.Identity = string(p.Identity)
	}
	add := func(rule, section, level, format string, args ...any) {
		a.Findings = append(a.Findings, Finding{rule, section, level, fmt.Sprintf(format, args...)})
	}
	if p.IsGroup() {
		a.Kind, a.Nodes = "group", strings.Join(p.Group, ",")
	}
	// Where the record and the backend disagree (reconcile.go).
	if !p.DeletePending.IsZero() {
		add("delete-pending", "", LevelError, "deletion began at %s, but its key could not be destroyed yet (backend unavailable?): derivation is refused; psk delete retries, and so does the next start", p.DeletePending.Format(time.RFC3339))
	}
	if !p.KeyMissing.IsZero() {
		add("key-missing", "", LevelError, "the backend no longer holds this PSK's key (found at start, %s): derivation fails; delete the record and provision a new PSK", p.KeyMissing.Format(time.RFC3339))
	}
	// Lifecycle first: a revoked PSK's other properties no longer matter.
	if p.State == StateRevoked {
		if len(p.Handle) > 0 {
			add("revoked", "4.2", LevelInfo, "revoked at %s (%s)", p.RevokedAt.Format(time.RFC3339), p.RevokeReason)
			add("main-key", "4.2", LevelShould, "revoked, but destroying its key in the backend failed: the handle is still recorded (psk delete retries)")
			a.Entropy = "revoked, key not yet destroyed"
			return a
		}
		add("revoked", "4.2", LevelInfo, "revoked at %s (%s); key destroyed", p.RevokedAt.Format(time.RFC3339), p.RevokeReason)
		a.Entropy = "destroyed"
		return a
	}
	// The MUST violations: the same predicate Derive applies, so what check
	// reports here is exactly what the daemon refuses to serve.
	a.Findings = append(a.Findings, v.mustViolations(p, fps[string(p.Fingerprint)])...)
	switch {
	case strings.HasPrefix(p.Origin, "generated"):
		a.Entropy = p.Origin + " by the vault"
	case p.LowEntropy:
		a.Entropy = "imported, LOW ENTROPY allowed"
		add("entropy", "4.2", LevelShould, "imported with --allow-low-entropy: the key failed the low-entropy checks (which ones is not kept: it would help guess the key); replace it with a generated key")
	case len(p.EntropyFindings) > 0:
		a.Entropy = "imported, " + strings.Join(p.EntropyFindings, "; ")
		add("entropy-unchecked", "4.2", LevelInfo, "entropy not checked: %s", strings.Join(p.EntropyFindings, "; "))
	default:
		a.Entropy = "imported, no low-entropy signs"
	}
	if p.Provenance != "" {
		a.Entropy += "; " + p.Provenance
	}
	if p.PSKKE {
		add("dhe", "6", LevelShould, "psk_ke allowed: no forward secrecy for connections under this PSK (recommendation: psk_dhe_ke)")
	}
	if p.EarlyData {
		add("early-data", "8", LevelWarn, "early data allowed: 0-RTT data is replayable and its keys depend on the PSK and the client random only")
	}
	// Section 4.1, section 6 rec. 2: two nodes per PSK.
	// (The MUST cases of section 4.1 and 6 rec. 2 are in mustViolations.)
	switch {
	case p.IsGroup() && p.NodeContext:
		add("group", "4.1", LevelWarn, "group PSK shared by %d nodes: any member can impersonate any other to a third; node contexts stop rerouting and Selfie only", len(p.Group))
	case !p.IsGroup() && p.ClientNode != p.ServerNode && !p.NodeContext:
		add("node-context", "4.1", LevelWarn, "node-identifier context not required (recommended against rerouting and Selfie attacks, RFC 9258 Appendix A)")
	}
	if len(p.Fingerprint) == 0 && !strings.HasPrefix(p.Origin, "imported-wrapped") {
		add("key-reuse-unknown", "6", LevelInfo, "record has no key fingerprint (made before pskvault kept them): reuse cannot be checked")
	}
	// Section 6 rec. 3-4: importers (always) and deleting the main key.
	switch {
	case !p.IsFinalized():
		add("main-key", "6", LevelShould, "main key still held: run 'psk finalize' once the targets are settled, so only imported keys remain")
	case len(p.Handle) > 0:
		add("main-key", "6", LevelShould, "finalized, but the main key's handle is still recorded: destroying it failed")
	}
	// Lifetime (section 4.2: short lifetimes bound PSK-only exposure).
	switch {
	case p.NotAfter.IsZero():
		add("expiry", "4.2", LevelWarn, "no expiry: set --not-after or rotate regularly")
	case p.Expired(now):
		add("expired", "4.2", LevelInfo, "expired at %s; derivation refused (delete or revoke to destroy the key)", p.NotAfter.Format(time.RFC3339))
	}
	// Identities, re-checked now against the whole vault.
	f, err := checkIdentity(p.Identity, known, true)
	if err != nil {
		add("identity", "6.1.1", LevelShould, "%v", err)
	}
	for _, x := range f {
		if x.Level != LevelInfo && !slices.Contains(a.Findings, x) {
			a.Findings = append(a.Findings, x)
		}
	}
	return a
}

// ErrMustViolation: the record breaks an RFC 9257 MUST (it was written by an
// older version, or edited or restored behind the daemon's back), so no key
// is derived from it. `pskvault check` lists the same violations.
var ErrMustViolation = errors.New("PSK record violates an RFC 9257 MUST, so it is not used (run pskvault check)")

// holdsKey reports whether p's key counts for the key-reuse rule: a live
// record with a fingerprint (revoked records keep theirs so that the key
// can never be imported again, but no longer hold the key).
func holdsKey(p *PSK) bool { return len(p.Fingerprint) > 0 && p.State != StateRevoked }

// mustViolations is the one predicate for "this record breaks an RFC 9257
// MUST": Check reports what it returns and Derive (hence derive, lookup
// and offers) refuses any record for which it returns something. sameKey
// lists the live identities holding p's key fingerprint (p's own among
// them, or not); a revoked record violates nothing any more.
func (v *Vault) mustViolations(p *PSK, sameKey [][]byte) []Finding {
	if p.State == StateRevoked {
		return nil
	}
	var out []Finding
	add := func(rule, section, format string, args ...any) {
		out = append(out, Finding{rule, section, LevelMust, fmt.Sprintf(format, args...)})
	}
	// Section 6 rec. 1: at least 128 bits long.
	if p.KeyBits < MinKeyLen*8 {
		add("key-length", "6", "key is %d bits; RFC 9257 requires at least 128", p.KeyBits)
	}
	// Section 4.1, section 6 rec. 2: two nodes per PSK, or a group that
	// uses RFC 9258's node-identifier accommodation.
	switch {
	case p.IsGroup() && !p.NodeContext:
		add("group-accommodation", "6", "group PSK without the node-identifier context: nothing stops one member from impersonating another")
	case !p.IsGroup() && p.ClientNode == p.ServerNode:
		add("same-node", "4.1", "client and server node are both %s", p.ClientNode)
	}
	if !p.Party(v.cfg.NodeID) {
		add("not-party", "4.1", "this node (%s) is not party to the PSK but holds it", v.cfg.NodeID)
	}
	if holdsKey(p) {
		self := false
		for _, o := range sameKey {
			if !bytes.Equal(o, p.Identity) {
				add("key-reuse", "6", "same key as PSK %x: one key is used by more than two nodes", o)
			} else {
				self = true
			}
		}
		// The key index lists every record with a fingerprint
		// (records.go); one it does not list was written behind the
		// vault's back (by hand, or by a pskvault from before the
		// indexes), and the index cannot vouch for its key.
		if !self {
			add("key-reuse-unverified", "6", "record missing from the vault's key index (written by hand or by an older pskvault): reuse of its key cannot be ruled out; remove the \"indexes\" entry of vault.db's meta bucket and restart to rebuild the indexes")
		}
	}
	return out
}

// refuseViolation returns ErrMustViolation naming the violated rules (never
// key material) when p breaks a MUST, nil otherwise. same lists the live
// records with p's key (liveWithKey, read with p).
func (v *Vault) refuseViolation(p *PSK, same [][]byte) error {
	fs := v.mustViolations(p, same)
	if len(fs) == 0 {
		return nil
	}
	msgs := make([]string, len(fs))
	for i, f := range fs {
		msgs[i] = f.Rule + ": " + f.String()
	}
	return fmt.Errorf("%w: %s", ErrMustViolation, strings.Join(msgs, "; "))
}
