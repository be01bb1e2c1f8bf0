package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"

	bolt "go.etcd.io/bbolt"
)

// prepareIdentity generates a random identity when asked. It runs first in
// checkImport, before the identity is validated.
func (v *Vault) prepareIdentity(req *ImportRequest) error {
	if !req.RandomIdentity {
		return nil
	}
	if len(req.Identity) > 0 {
		return fmt.Errorf("%w: give an identity or ask for a random one, not both", ErrInvalid)
	}
	id, err := RandomIdentity()
	if err != nil {
		return err
	}
	req.Identity = id
	return nil
}

// maxProvenance bounds the caller's provenance note.
const maxProvenance = 200

// preparePolicy applies the RFC 9257 import rules to a checked request and
// returns the policy to record: identity rules, stack limits, entropy,
// reuse, provenance, key-exchange flags.
func (v *Vault) preparePolicy(ctx context.Context, req *ImportRequest) (Policy, error) {
	pol := Policy{
		PSKKE:          req.AllowPSKKE,
		EarlyData:      req.AllowEarlyData,
		Group:          req.Group,
		NodeContext:    req.NodeContext || len(req.Group) > 0,
		RandomIdentity: req.RandomIdentity,
		Generation:     1,
	}
	// Identities (sections 6.1.1, 7).
	if !req.RandomIdentity {
		// Only the identities sharing this one's skeleton matter to the
		// confusable rule: one lookup in the index, not a skeleton of
		// every stored identity.
		var known skeletons
		v.db.View(func(tx *bolt.Tx) error {
			known = sameSkeleton(tx, req.Identity)
			return nil
		})
		f, err := checkIdentity(req.Identity, known, req.AllowIdentityWarnings)
		if err != nil {
			return pol, err
		}
		pol.IdentityFindings = f
	}
	if req.Stack != "" {
		ctxLen := 0
		if pol.NodeContext {
			ctxLen = 3 + len(nodeContextLabel) + 2*64 // the longest node ids
			if len(req.Group) == 0 {
				ctxLen = 3 + len(nodeContextLabel) + len(req.ClientNode) + len(req.ServerNode)
			}
		}
		if err := CheckStack(req.Stack, req.Identity, ctxLen, req.Targets); err != nil {
			return pol, err
		}
	}
	// Provenance.
	note := strings.TrimSpace(req.Provenance)
	if len(note) > maxProvenance || strings.IndexFunc(note, unicode.IsControl) >= 0 {
		return pol, fmt.Errorf("%w: provenance note must be at most %d printable characters", ErrInvalid, maxProvenance)
	}
	switch {
	case req.origin != "":
		pol.Provenance = fmt.Sprintf("%s on node %s by the %s backend", req.origin, v.cfg.NodeID, v.backend.Info().Name)
	case req.Wrapped:
		pol.Provenance = fmt.Sprintf("imported on node %s as a PRK wrapped for the %s backend", v.cfg.NodeID, v.backend.Info().Name)
	default:
		pol.Provenance = fmt.Sprintf("imported on node %s", v.cfg.NodeID)
	}
	if note != "" {
		pol.Provenance += " from " + note
	}
	if req.Wrapped {
		pol.EntropyFindings = []string{"unchecked: a wrapped key is never seen in clear"}
		return pol, nil
	}
	// Entropy (sections 4.2, 6 rec. 1). Generated keys are not checked: a
	// check could only fail by chance, and they come from the RNG.
	if req.origin == "" {
		if f := AssessEntropy(req.Key); len(f) > 0 {
			if !req.AllowLowEntropy {
				return pol, fmt.Errorf("%w: %s (if the key really is what you must use, import it with --allow-low-entropy; the PSK is then flagged for good)", ErrLowEntropy, strings.Join(f, "; "))
			}
			// Only the flag is kept: which detector fired ("a 4-byte
			// pattern repeated", "a published example key") would tell
			// anyone who can read the record how to guess the key.
			pol.LowEntropy = true
		}
	}
	// Reuse (section 4.1, section 6 rec. 2).
	fp, err := v.fingerprint(ctx, req.Key)
	if err != nil {
		return pol, err
	}
	// Any record made with this key, revoked ones included: one lookup in
	// the fingerprint index.
	var dup *PSK
	err = v.db.View(func(tx *bolt.Tx) error {
		for _, id := range withKey(tx, fp) {
			if p, err := peekTx(tx, id); err == nil {
				dup = p
				return nil
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return pol, err
	}
	if dup != nil {
		return pol, fmt.Errorf("%w: it is the key of PSK %x (%s); give every pair of nodes its own key", ErrKeyReused, dup.Identity, dup.describeNodes())
	}
	pol.Fingerprint = fp
	return pol, nil
}

// describeNodes names the PSK's nodes for messages.
func (p *PSK) describeNodes() string {
	if p.IsGroup() {
		return "group " + strings.Join(p.Group, ",")
	}
	return fmt.Sprintf("client %s, server %s", p.ClientNode, p.ServerNode)
}
