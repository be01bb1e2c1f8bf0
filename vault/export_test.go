package vault

import "time"

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
