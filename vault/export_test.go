package vault

import (
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SetNow replaces the vault's clock (tests only).
func SetNow(v *Vault, now func() time.Time) { v.now = now }

// PutRecord writes a record as is, bypassing every check (tests only: it
// simulates a database written by an older version or tampered with).
func PutRecord(v *Vault, p *PSK) error { return v.put(p, false) }

// SetCompactFault makes every later compaction call f at each step
// ("rename": the new file is written and synced, vault.db not yet
// replaced) and abort there when f returns an error (tests only).
func SetCompactFault(v *Vault, f func(step string) error) {
	v.db.mu.Lock()
	v.db.fault = f
	v.db.mu.Unlock()
}

// PutRecords writes many records as they are, in one transaction,
// bypassing every check (tests and benchmarks only: it builds a large
// vault quickly, as an offline provisioning run would).
func PutRecords(v *Vault, ps []*PSK) error {
	err := v.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPSKs)
		for _, p := range ps {
			raw, err := json.Marshal(p)
			if err != nil {
				return err
			}
			if err := b.Put(recordKey(p.Identity), raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, p := range ps {
		v.index(v.psks[string(p.Identity)], p)
		v.psks[string(p.Identity)] = p
	}
	return nil
}

// SetBeforeWrite makes every later database write call f first, before it
// waits for the database (tests only); nil removes it.
func SetBeforeWrite(v *Vault, f func()) {
	if f == nil {
		v.db.beforeUpdate.Store(nil)
		return
	}
	v.db.beforeUpdate.Store(&f)
}
