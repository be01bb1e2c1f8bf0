package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pskvault/pskvault/importer"
)

// Crash consistency between the records and a backend that keeps keys
// apart from them (a PKCS#11 token; docs/DESIGN.md, "Crash consistency"):
//
//   - Create: before the backend creates a key it reports the key's handle
//     (NoteNewKey), and the vault writes an intent naming it to the
//     intents bucket (fsync'd by bbolt). The record that names the key is
//     written in the same transaction that drops the intent. A crash in
//     between leaves an intent whose key no record names: the next Open
//     destroys that key and drops the intent.
//   - Delete: the record is marked DeletePending first (derivation refused
//     from then on), then the key is destroyed, then the record removed. A
//     crash or a failed destroy leaves the marked record; psk delete or the
//     next Open finishes it. A record is never left active with its key
//     gone, and a key is never left without a record unless its destroy
//     was asked for.
//   - Revoke and finalize already record first and clear the handle once
//     the key is destroyed; Open retries the destroy of a handle left.
//   - With a KeyInventory, Open lists the backend's keys for this vault:
//     an active record whose key is not there (and that the backend, asked
//     directly, confirms is gone) is marked KeyMissing and reported by
//     check; a key that no record and no intent names is reported as an
//     orphan, not destroyed, since nothing says it was never used (a
//     vault.db restored from an older backup would show that).
//
// "Unreachable" is never taken for "gone": a backend that cannot tell
// fails with ErrBackendUnavailable, and everything above is then left as it
// is for the next attempt.

const (
	vaultIDName = "vault_id"
	vaultIDLen  = 16
)

var bucketIntents = []byte("intents")

// intent is a key the vault asked a backend to create and has not yet
// recorded in a PSK record or the metadata.
type intent struct {
	Purpose  string        `json:"purpose"` // "import" or "aux"
	Identity []byte        `json:"identity,omitempty"`
	Hash     importer.Hash `json:"hash"`
	At       time.Time     `json:"at"`
}

// Reconciliation is what Open found and did about records and backend keys.
type Reconciliation struct {
	// CreatesUndone counts keys of interrupted creates destroyed.
	CreatesUndone int `json:"creates_undone"`
	// DeletesFinished counts pending deletes completed.
	DeletesFinished int `json:"deletes_finished"`
	// HandlesCleared counts revoked or finalized records whose key's
	// destroy was finished.
	HandlesCleared int `json:"handles_cleared"`
	// KeysChecked is how many active records were compared with the
	// backend's keys (0 without a KeyInventory).
	KeysChecked int `json:"keys_checked"`
	// KeysMissing lists (identity hex) active records whose key the
	// backend no longer holds.
	KeysMissing []string `json:"keys_missing,omitempty"`
	// Orphans lists (handle hex) the backend's keys for this vault that no
	// record and no intent names: reported, not destroyed.
	Orphans []string `json:"orphaned_keys,omitempty"`
	// Problems says what could not be done (the backend unreachable, ...).
	Problems []string `json:"problems,omitempty"`
}

// Reconciliation returns what Open's reconciliation found and did.
func (v *Vault) Reconciliation() Reconciliation {
	if v.recon == nil { // set once, by Open
		return Reconciliation{}
	}
	return *v.recon
}

// ensureVaultID returns the vault's ID, making one for a vault created
// before IDs existed, and makes sure the intents bucket exists. When that
// cannot be written (a full disk) the vault runs without an ID: keys made
// then are not tagged, which only keeps them out of the inventory.
func (v *Vault) ensureVaultID() ([]byte, error) {
	var id []byte
	v.db.View(func(tx *bolt.Tx) error {
		id = bytes.Clone(tx.Bucket(bucketMeta).Get([]byte(vaultIDName)))
		if tx.Bucket(bucketIntents) == nil {
			id = nil // write both below
		}
		return nil
	})
	if len(id) == vaultIDLen {
		return id, nil
	}
	err := v.db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketIntents); err != nil {
			return err
		}
		m := tx.Bucket(bucketMeta)
		if cur := m.Get([]byte(vaultIDName)); len(cur) == vaultIDLen {
			id = bytes.Clone(cur)
			return nil
		}
		id = make([]byte, vaultIDLen)
		if _, err := rand.Read(id); err != nil {
			return err
		}
		return m.Put([]byte(vaultIDName), id)
	})
	if err != nil {
		return nil, fmt.Errorf("vault ID not recorded (keys made now are not tagged for the reconciliation at start): %w", err)
	}
	return id, nil
}

// intentContext makes NoteNewKey, in backend calls under ctx, record the
// intent to create a key for purpose.
func (v *Vault) intentContext(ctx context.Context, purpose string, identity []byte, h importer.Hash) context.Context {
	return withNewKeyHook(ctx, func(handle []byte) error {
		raw, err := json.Marshal(intent{Purpose: purpose, Identity: identity, Hash: h, At: v.now().UTC()})
		if err != nil {
			return err
		}
		err = v.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketIntents)
			if b == nil {
				return errors.New("vault.db has no intents bucket")
			}
			return b.Put(handle, raw)
		})
		if err != nil {
			return fmt.Errorf("record the intent to create a key: %w", err)
		}
		return nil
	})
}

// dropIntent removes the intent for handle, in the transaction that
// records the key.
func dropIntent(tx *bolt.Tx, handle []byte) error {
	b := tx.Bucket(bucketIntents)
	if b == nil || len(handle) == 0 {
		return nil
	}
	return b.Delete(handle)
}

// presenceProbe is what the vault asks a backend to HMAC to learn whether
// a key not in its inventory (made before keys were tagged) still exists.
var presenceProbe = []byte("pskvault key presence probe")

// reconcile finishes what a crash interrupted and compares the records
// with the backend's keys. It runs in Open, before anything is served.
func (v *Vault) reconcile(ctx context.Context) *Reconciliation {
	r := &Reconciliation{}
	problem := func(format string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, a...)) }
	referenced := func() map[string]bool {
		refs := map[string]bool{}
		if err := v.each(true, func(p *PSK) bool {
			if len(p.Handle) > 0 {
				refs[string(p.Handle)] = true
			}
			return true
		}); err != nil {
			problem("the records could not all be read: %v", err)
			return nil
		}
		v.db.View(func(tx *bolt.Tx) error {
			if h := tx.Bucket(bucketMeta).Get([]byte(auxKeyName)); len(h) > 0 {
				refs[string(h)] = true
			}
			return nil
		})
		return refs
	}

	// Creates that did not reach their record.
	type pending struct {
		handle []byte
		in     intent
	}
	var intents []pending
	v.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIntents)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, val []byte) error {
			var in intent
			json.Unmarshal(val, &in)
			intents = append(intents, pending{bytes.Clone(k), in})
			return nil
		})
	})
	var refs map[string]bool
	if len(intents) > 0 {
		if refs = referenced(); refs == nil {
			intents = nil // nothing known to be unnamed: left for the next start
		}
	}
	for _, it := range intents {
		if !refs[string(it.handle)] {
			if err := v.backend.DeleteKey(ctx, KeyRef{Handle: it.handle, Hash: it.in.Hash}); err != nil {
				problem("the key of an interrupted %s (identity %x) could not be destroyed yet: %v", it.in.Purpose, it.in.Identity, err)
				continue
			}
			r.CreatesUndone++
		}
		if err := v.db.Update(func(tx *bolt.Tx) error { return dropIntent(tx, it.handle) }); err != nil {
			problem("intent not removed: %v", err)
		}
	}

	// Deletes, revokes and finalizes that did not finish.
	var todo []*PSK
	err := v.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUnfinished).ForEach(func(_, id []byte) error {
			p, err := v.readTx(tx, id)
			if err != nil {
				return err
			}
			if unfinished(p) {
				todo = append(todo, p)
			}
			return nil
		})
	})
	if err != nil {
		problem("the records left unfinished could not be read: %v", err)
	}
	for _, p := range todo {
		switch {
		case !p.DeletePending.IsZero():
			if err := v.deleteRecord(ctx, p.Identity); err != nil {
				problem("PSK %x: %v", p.Identity, err)
				continue
			}
			r.DeletesFinished++
		case len(p.Handle) > 0 && (p.State == StateRevoked || p.IsFinalized()):
			if err := v.backend.DeleteKey(ctx, KeyRef{Handle: p.Handle, Hash: p.Hash}); err != nil {
				problem("PSK %x: destroying the key of a revoked or finalized PSK: %v", p.Identity, err)
				continue
			}
			done := p.clone()
			done.Handle = nil
			if err := v.replace(p, done); err != nil {
				problem("PSK %x: %v", p.Identity, err)
				continue
			}
			r.HandlesCleared++
		}
	}

	// The backend's keys against the records.
	if inv, ok := v.backend.(KeyInventory); ok {
		if refs := referenced(); refs != nil {
			v.inventory(ctx, inv, r, refs)
		}
	}
	return r
}

// inventory marks active records whose key is gone, clears the mark of
// those whose key is there, and lists orphaned keys.
func (v *Vault) inventory(ctx context.Context, inv KeyInventory, r *Reconciliation, refs map[string]bool) {
	keys, err := inv.Keys(ctx)
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("the backend's keys could not be listed, so records and keys were not compared: %v", err))
		return
	}
	have := map[string]bool{}
	for _, k := range keys {
		have[string(k)] = true
		if !refs[string(k)] {
			r.Orphans = append(r.Orphans, hex.EncodeToString(k))
		}
	}
	now := v.now().UTC().Truncate(time.Second)
	// One record at a time: each holds no transaction while the backend
	// is asked (each, records.go).
	err = v.each(true, func(p *PSK) bool {
		if p.State != StateActive || len(p.Handle) == 0 || p.IsFinalized() || !p.DeletePending.IsZero() {
			return true
		}
		r.KeysChecked++
		present := have[string(p.Handle)]
		if !present {
			// Not listed: a key made before keys were tagged, or gone.
			out, err := v.backend.HMAC(ctx, KeyRef{Handle: p.Handle, Hash: p.Hash}, presenceProbe)
			clear(out)
			switch {
			case err == nil:
				present = true
			case !errors.Is(err, ErrKeyNotFound):
				r.Problems = append(r.Problems, fmt.Sprintf("PSK %x: its key's presence could not be checked: %v", p.Identity, err))
				return true
			}
		}
		if !present {
			r.KeysMissing = append(r.KeysMissing, p.IdentityHex())
		}
		if present == p.KeyMissing.IsZero() {
			return true // the mark is right
		}
		n := p.clone()
		n.KeyMissing = time.Time{}
		if !present {
			n.KeyMissing = now
		}
		if err := v.replace(p, n); err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("PSK %x: recording whether its key is missing: %v", p.Identity, err))
		}
		return true
	})
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("the records could not all be read, so records and keys were not all compared: %v", err))
	}
}
