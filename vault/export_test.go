package vault

import "time"

// SetNow replaces the vault's clock (tests only).
func SetNow(v *Vault, now func() time.Time) { v.now = now }

// PutRecord writes a record as is, bypassing every check (tests only: it
// simulates a database written by an older version or tampered with).
func PutRecord(v *Vault, p *PSK) error { return v.put(p, false) }
