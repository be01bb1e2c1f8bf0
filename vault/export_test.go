package vault

import (
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
func PutRecords(v *Vault, ps []*PSK) error { return putRecords(v, ps, true) }

// PutRecordsUnindexed is PutRecords leaving the indexes as they are, as a
// hand edit or a pskvault from before the indexes would (tests only).
func PutRecordsUnindexed(v *Vault, ps []*PSK) error { return putRecords(v, ps, false) }

func putRecords(v *Vault, ps []*PSK, index bool) error {
	// Records with a handle get key slots and sealed secrets, as the
	// vault writes them.
	raws, _, err := v.sealBatch(ps)
	if err != nil {
		return err
	}
	err = v.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPSKs)
		for i, p := range ps {
			if err := b.Put(recordKey(p.Identity), raws[i]); err != nil {
				return err
			}
			if !index {
				continue
			}
			if err := indexPut(tx, nil, p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
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

// SetSlotFault makes every later key-slot step call f first ("write":
// before DEKs are written; "take": before a single allocation takes a
// slot; "shred": before slots are zeroed) and fail
// there when f returns an error (tests only).
func SetSlotFault(v *Vault, f func(step string) error) {
	v.slots.mu.Lock()
	v.slots.fault = f
	v.slots.mu.Unlock()
}

// KeySlotOf returns the key slot of the PSK's record (tests only).
func KeySlotOf(v *Vault, identity []byte) uint32 {
	if p, err := v.peek(identity); err == nil {
		return p.KeySlot
	}
	return 0
}

// SlotSize is the size of a key slot in vault.keys.
const SlotSize = slotSize

// HoldWrite opens a bbolt write transaction and keeps it open until
// release is closed (tests only); held is closed once it is open.
func HoldWrite(v *Vault, held chan<- struct{}, release <-chan struct{}) error {
	return v.db.Update(func(*bolt.Tx) error {
		close(held)
		<-release
		return nil
	})
}

// WaitWarm waits until a walk mapping vault.db's pages has finished
// (warm.go), at most d; it reports whether one did.
func WaitWarm(v *Vault, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if v.db.warmed.Load() > 0 {
			return true
		}
	}
	return false
}

// FreelistSyncSkipped reports whether the vault's commits skip writing
// bbolt's free-page list (tests only).
func FreelistSyncSkipped(v *Vault) bool {
	skipped := false
	v.db.View(func(tx *bolt.Tx) error { skipped = tx.DB().NoFreelistSync; return nil })
	return skipped
}

// Walks counts the walks over every record so far (tests only).
func Walks(v *Vault) int64 { return v.walks.Load() }
