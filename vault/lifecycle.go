package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pskvault/pskvault/importer"
)

// FinalizeRequest says which imported keys to keep.
type FinalizeRequest struct {
	// Contexts to keep for a PSK without a node-identifier context; nil
	// keeps the empty context only. Ignored (the canonical node contexts
	// are used) when the PSK requires a node context.
	Contexts [][]byte
}

// finalizeContexts lists the (context, role, peer) combinations to derive.
func (v *Vault) finalizeContexts(p *PSK, req FinalizeRequest) ([][]byte, error) {
	me := v.cfg.NodeID
	switch {
	case p.IsGroup():
		var out [][]byte
		for _, peer := range p.Group {
			if peer == me {
				continue
			}
			a, err := NodeContext(me, peer)
			if err != nil {
				return nil, err
			}
			b, err := NodeContext(peer, me)
			if err != nil {
				return nil, err
			}
			out = append(out, a, b)
		}
		return out, nil
	case p.NodeContext:
		c, err := NodeContext(p.ClientNode, p.ServerNode)
		if err != nil {
			return nil, err
		}
		return [][]byte{c}, nil
	case len(req.Contexts) == 0:
		return [][]byte{nil}, nil
	}
	return req.Contexts, nil
}

// Finalize implements RFC 9257 section 6 rec. 4: derive the imported PSK
// for every allowed target (and context), keep each sealed under the
// vault's auxiliary backend key, then destroy the main key (the PRK) in the
// backend. Afterwards the PSK answers only those targets and contexts;
// anything else is refused with ErrFinalized.
//
// Why sealed and not stored as backend keys: a backend only computes HMAC
// under its keys and never returns them, but a TLS stack needs the ipskx
// bytes. Sealing with an AEAD key that only the backend can recompute
// (HMAC under the auxiliary key) keeps the imported keys exactly as
// hardware-bound as the main key was, while the main key, which could
// derive imported keys for any target and context, is gone.
func (v *Vault) Finalize(ctx context.Context, identity []byte, req FinalizeRequest) (*PSK, error) {
	p, err := v.get(identity)
	if err != nil {
		return nil, err
	}
	if err := v.usable(p); err != nil {
		return nil, err
	}
	if p.IsFinalized() {
		return nil, fmt.Errorf("%w at %s already", ErrFinalized, p.FinalizedAt.Format(time.RFC3339))
	}
	contexts, err := v.finalizeContexts(p, req)
	if err != nil {
		return nil, err
	}
	key := KeyRef{Handle: p.Handle, Hash: p.Hash}
	var sealed []Sealed
	for _, t := range p.Targets {
		for _, c := range contexts {
			plan, err := importer.NewPlan(p.Hash, importer.Identity{External: p.Identity, Context: c, Protocol: t.Protocol, KDF: t.KDF})
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
			}
			ipskx, err := plan.Expand(func(data []byte) ([]byte, error) { return v.hmac(ctx, key, data) })
			if err != nil {
				return nil, fmt.Errorf("derive in %s backend: %w", p.Backend, err)
			}
			box, err := v.seal(ctx, plan.ImportedIdentity(), ipskx)
			clear(ipskx)
			if err != nil {
				return nil, fmt.Errorf("seal imported PSK: %w", err)
			}
			sealed = append(sealed, Sealed{Target: t, Context: bytes.Clone(c), Box: box})
		}
	}
	n := p.clone()
	n.Finalized, n.FinalizedAt = sealed, v.now().UTC().Truncate(time.Second)
	// Record first, with the main key's handle: if destroying the key then
	// fails, the record already refuses new targets, `check` reports the
	// leftover key and `psk delete` can still destroy it. The handle goes
	// once the key is gone. The record must still be the one the imported
	// keys were derived from (not revoked or deleted meanwhile).
	if err := v.replace(p, n); err != nil {
		return nil, err
	}
	derr := v.guard.change(ctx, OpDelete, func() error { return v.backend.DeleteKey(ctx, key) })
	if derr != nil {
		derr = fmt.Errorf("imported keys kept, but destroying the main key in the %s backend failed (its handle stays recorded: `check` reports it, psk delete retries): %w", p.Backend, derr)
	} else {
		done := n.clone()
		done.Handle = nil
		if err := v.replace(n, done); err != nil {
			derr = fmt.Errorf("main key destroyed, but recording that failed: %w", err)
		} else {
			n = done
		}
	}
	// The record moved to a new key slot when the handle went, and the
	// slot that sealed the handle was zeroed (keyslots.go).
	if derr != nil {
		return nil, derr
	}
	return n.clone(), nil
}

// usable refuses PSKs that are revoked or expired.
func (v *Vault) usable(p *PSK) error {
	if p.State != StateActive {
		return fmt.Errorf("%w at %s: %s", ErrRevoked, p.RevokedAt.Format(time.RFC3339), p.RevokeReason)
	}
	if err := deletePending(p); err != nil {
		return err
	}
	if p.Expired(v.now()) {
		return fmt.Errorf("%w at %s", ErrExpired, p.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// deriveFinalized answers a derivation of a finalized PSK from its sealed
// imported keys.
func (v *Vault) deriveFinalized(ctx context.Context, p *PSK, t Target, importedIdentity []byte, role string) (*Derived, error) {
	var have []string
	for _, s := range p.Finalized {
		c := "empty context"
		if len(s.Context) > 0 {
			c = fmt.Sprintf("context %x", s.Context)
		}
		have = append(have, s.Target.String()+" with "+c)
		if s.Target != t {
			continue
		}
		plan, err := importer.NewPlan(p.Hash, importer.Identity{External: p.Identity, Context: s.Context, Protocol: t.Protocol, KDF: t.KDF})
		if err != nil || !bytes.Equal(plan.ImportedIdentity(), importedIdentity) {
			continue
		}
		ipskx, err := v.unseal(ctx, importedIdentity, s.Box)
		if err != nil {
			return nil, err
		}
		return &Derived{PSK: p.clone(), ImportedIdentity: bytes.Clone(importedIdentity), IPSKX: ipskx, Role: role, Context: bytes.Clone(s.Context)}, nil
	}
	return nil, fmt.Errorf("%w at %s (RFC 9257 section 6 rec. 4), so only the imported keys kept then can be handed out: %s; for anything else rotate to a new PSK", ErrFinalized, p.FinalizedAt.Format(time.RFC3339), strings.Join(have, ", "))
}

// Revoke stops a PSK at once: its key (or its sealed imported keys) is
// destroyed and derivation refused from now on. The record stays, so the
// identity and the key's fingerprint can never be reused, and `check` and
// `list` keep showing it; `psk delete` removes it. The record's key slot
// is zeroed, so no copy of the record left in vault.db's freed pages can
// be opened (keyslots.go).
func (v *Vault) Revoke(ctx context.Context, identity []byte, reason string) (*PSK, error) {
	n, err := v.revoke(ctx, identity, reason)
	if n == nil || err != nil {
		return nil, err
	}
	return n, nil
}

// revoke revokes. When the record was changed it returns it, with the
// error of destroying the key in the backend if that failed.
func (v *Vault) revoke(ctx context.Context, identity []byte, reason string) (*PSK, error) {
	if len(reason) > maxProvenance {
		return nil, fmt.Errorf("%w: reason longer than %d characters", ErrInvalid, maxProvenance)
	}
	p, err := v.get(identity)
	if err != nil {
		return nil, err
	}
	if p.State == StateRevoked {
		return nil, fmt.Errorf("%w already at %s", ErrRevoked, p.RevokedAt.Format(time.RFC3339))
	}
	n := p.clone()
	n.State, n.RevokedAt, n.RevokeReason = StateRevoked, v.now().UTC().Truncate(time.Second), reason
	n.Finalized = nil
	if len(p.Handle) > 0 && !v.keysOutside() {
		// The key is in the handle (soft, TPM): one change, whose key
		// slot is zeroed before it is committed (store) destroys it.
		n.Handle = nil
		if err := v.replace(p, n); err != nil {
			return nil, err
		}
		v.forgetKey(ctx, p)
		return n.clone(), nil
	}
	// Revoked first, with the key's handle until the key is destroyed, so a
	// key the backend fails to destroy stays named in the record (`check`
	// reports it, psk delete retries) instead of being orphaned.
	if err := v.replace(p, n); err != nil {
		return nil, err
	}
	if len(p.Handle) > 0 {
		if err := v.guard.change(ctx, OpDelete, func() error { return v.backend.DeleteKey(ctx, KeyRef{Handle: p.Handle, Hash: p.Hash}) }); err != nil {
			return n.clone(), fmt.Errorf("PSK revoked, but destroying its key in the %s backend failed (its handle stays recorded: psk delete retries): %w", p.Backend, err)
		}
		done := n.clone()
		done.Handle = nil
		if err := v.replace(n, done); err != nil {
			return n.clone(), fmt.Errorf("PSK revoked and its key destroyed, but recording that failed: %w", err)
		}
		n = done
	}
	return n.clone(), nil
}

// RotateRequest makes the next generation of a PSK.
type RotateRequest struct {
	// NewIdentity names the new generation; empty with a random old
	// identity means a new random one.
	NewIdentity []byte
	// Key is the new EPSK; nil generates one (returned by Rotate).
	Key []byte
	// Overlap is how long the old generation stays derivable; it then
	// expires (its not-after is brought forward, never pushed back).
	Overlap time.Duration
	// NotAfter of the new generation; zero keeps the old one's lifetime.
	NotAfter time.Time
	// Provenance of an imported Key.
	Provenance string
	// AllowLowEntropy, AllowIdentityWarnings as for import.
	AllowLowEntropy, AllowIdentityWarnings bool
	// Wrapped, WrappedKeyBits, Params and Bundle as for import: a Key
	// wrapped for this backend's hardware, and a provisioning bundle that
	// must authenticate under it.
	Wrapped        bool
	WrappedKeyBits int
	Params         map[string]string
	Bundle         *BundleAuth
}

// Rotate creates the next generation of a PSK with the same nodes, targets
// and policy, and schedules the old one to expire after the overlap window,
// so both sides can switch over while either generation works. It returns
// the new record and, when it generated the key, the key for the peer.
func (v *Vault) Rotate(ctx context.Context, identity []byte, req RotateRequest) (*PSK, []byte, error) {
	cur, err := v.get(identity)
	if err != nil {
		return nil, nil, err
	}
	old := cur.clone()
	if err := v.usable(old); err != nil {
		return nil, nil, err
	}
	if len(old.RotatedTo) > 0 {
		// Rotating again is refused while the next generation lives; one
		// that was deleted or revoked (say its key never reached the peer)
		// no longer blocks the link's rotation.
		next, err := v.peek(old.RotatedTo)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, nil, err
		}
		if next != nil && next.State == StateActive {
			return nil, nil, fmt.Errorf("%w: PSK was already rotated to %x; rotate that one", ErrInvalid, old.RotatedTo)
		}
	}
	if req.Overlap < 0 {
		return nil, nil, fmt.Errorf("%w: overlap must not be negative", ErrInvalid)
	}
	ir := ImportRequest{
		Identity:   req.NewIdentity,
		Hash:       old.Hash,
		ClientNode: old.ClientNode,
		ServerNode: old.ServerNode,
		Targets:    slices.Clone(old.Targets),
		NotAfter:   req.NotAfter,
		PolicyRequest: PolicyRequest{
			AllowLowEntropy:       req.AllowLowEntropy,
			AllowPSKKE:            old.PSKKE,
			AllowEarlyData:        old.EarlyData,
			Group:                 slices.Clone(old.Group),
			NodeContext:           old.NodeContext,
			Provenance:            req.Provenance,
			AllowIdentityWarnings: req.AllowIdentityWarnings,
			Finalize:              old.IsFinalized(),
		},
	}
	if len(ir.Identity) == 0 {
		if !old.RandomIdentity {
			return nil, nil, fmt.Errorf("%w: give the new generation's identity (or rotate a PSK that has a random identity)", ErrInvalid)
		}
		ir.RandomIdentity = true
	}
	if ir.NotAfter.IsZero() && !old.NotAfter.IsZero() {
		ir.NotAfter = v.now().Add(old.NotAfter.Sub(old.Created))
	}
	// The new generation is written with its lineage, in one change.
	ir.generation, ir.rotatedFrom = max(old.Generation, 1)+1, old.Identity
	var n *PSK
	var key []byte
	if req.Key == nil {
		n, key, err = v.Create(ctx, ir)
	} else {
		ir.Key, ir.Wrapped, ir.WrappedKeyBits, ir.Params, ir.Bundle = req.Key, req.Wrapped, req.WrappedKeyBits, req.Params, req.Bundle
		n, err = v.Import(ctx, ir)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("new generation: %w", err)
	}
	o := old
	o.RotatedTo = bytes.Clone(n.Identity)
	if end := v.now().Add(req.Overlap).UTC().Truncate(time.Second); o.NotAfter.IsZero() || end.Before(o.NotAfter) {
		o.NotAfter = end
	}
	// The old generation must still be the record read above: a revoke,
	// delete or other rotation that ran while the new generation was made
	// must not be undone by writing the old copy back. Then the new
	// generation is not kept either (its key never reached the peer).
	if err := v.replace(cur, o); err != nil {
		clear(key)
		if derr := v.Delete(ctx, n.Identity); derr != nil && !errors.Is(derr, ErrNotFound) {
			err = errors.Join(err, fmt.Errorf("and removing the new generation %x failed: %w", n.Identity, derr))
		}
		return nil, nil, fmt.Errorf("rotate (no new generation kept): %w", err)
	}
	return n, key, nil
}

// Sweep destroys the keys of PSKs past their not-after time (derivation is
// refused from that instant anyway): each is revoked with the reason
// "expired", so its record, identity and fingerprint stay. It returns the
// identities swept.
func (v *Vault) Sweep(ctx context.Context) ([][]byte, error) {
	now := v.now()
	var swept [][]byte
	var errs []error
	expired, err := v.expiredAt(now)
	if err != nil {
		return nil, err
	}
	for _, p := range expired {
		if _, err := v.revoke(ctx, p.Identity, "expired at "+p.NotAfter.Format(time.RFC3339)); err != nil {
			errs = append(errs, fmt.Errorf("PSK %x: %w", p.Identity, err))
			continue
		}
		swept = append(swept, p.Identity)
	}
	return swept, errors.Join(errs...)
}

// deletePending refuses a PSK whose delete has begun.
func deletePending(p *PSK) error {
	if p.DeletePending.IsZero() {
		return nil
	}
	return fmt.Errorf("%w: deletion pending since %s (its key could not be destroyed yet; psk delete retries, and so does the next start)", ErrRevoked, p.DeletePending.Format(time.RFC3339))
}
