package vault

import (
	"bytes"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Stats are the vault's counts for monitoring (the daemon's metrics): how
// many records are in each state, and when the next one expires. The
// counts by state are kept in vault.db by every change (indexPut), so
// reading them does not walk the records; the expired ones and the next
// expiry come from the by-expiry index (records.go), from its start up to
// the first instant still ahead: O(1) plus the active records already
// past their not_after, which psk sweep (the sweep timer) revokes.
type Stats struct {
	Active  int // active and not past not_after
	Expired int // active but past not_after (psk sweep destroys their keys)
	Revoked int // revoked, swept or finalized-and-revoked: no main key
	// NextExpiry is the earliest not_after still ahead among the active
	// records; zero when none has one.
	NextExpiry time.Time
}

// expires reports whether p belongs in the by-expiry index.
func expires(p *PSK) bool { return p.State == StateActive && !p.NotAfter.IsZero() }

// Stats returns the counts of the records by state and the next expiry.
// It takes one read transaction and never waits for a change.
func (v *Vault) Stats() Stats {
	var st Stats
	now := expiryKey(v.now())
	v.db.View(func(tx *bolt.Tx) error {
		c := readCounts(tx)
		st.Revoked = int(c.revoked)
		cur := tx.Bucket(bucketByExpiry).Cursor()
		k, _ := cur.First()
		for ; k != nil && bytes.Compare(k[:12], now) <= 0; k, _ = cur.Next() {
			st.Expired++
		}
		if k != nil {
			st.NextExpiry = expiryTime(k)
		}
		st.Active = int(c.active) - st.Expired
		return nil
	})
	return st
}
