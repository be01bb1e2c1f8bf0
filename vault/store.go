package vault

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Reading and writing records with their sealed secrets (keyslots.go).

// start prepares an opened vault.db for serving, reading no record in the
// usual case: it reads the configuration, zeroes the key slots noted in
// the shred bucket (a crash before they were zeroed), builds the indexes
// of a vault made before them (migrateIndexes, once), and, when the last
// process to open the vault did not close it, zeroes the key slots a crash
// may have left that no record names (reclaimSlots); only these two read
// vault.keys whole. It returns what it found amiss but could live
// with.
func (v *Vault) start() ([]string, error) {
	var problems []string
	var notes []uint32
	var version []byte
	crashed := false
	err := v.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m == nil || tx.Bucket(bucketPSKs) == nil {
			return fmt.Errorf("%w: %s has no metadata", ErrNotInitialized, v.db.path)
		}
		if err := json.Unmarshal(m.Get([]byte("config")), &v.cfg); err != nil {
			return fmt.Errorf("read vault config: %w", err)
		}
		version = bytes.Clone(m.Get([]byte(indexesName)))
		crashed = m.Get([]byte(runningName)) != nil
		if b := tx.Bucket(bucketShred); b != nil {
			b.ForEach(func(k, _ []byte) error {
				if len(k) == 4 {
					notes = append(notes, binary.BigEndian.Uint32(k))
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(notes) > 0 {
		if err := v.slots.shred(notes...); err != nil {
			problems = append(problems, fmt.Sprintf("key slots noted for shredding not zeroed yet: %v", err))
		} else if err := v.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketShred) }); err != nil {
			problems = append(problems, fmt.Sprintf("shredded key slots done, but the note not removed: %v", err))
		} else {
			v.slots.release(notes...)
		}
	}
	var slotData []byte
	if crashed || !bytes.Equal(version, []byte{indexesVersion}) {
		if slotData, err = v.slots.readAll(); err != nil {
			return nil, err
		}
		defer clear(slotData)
	}
	switch {
	case !bytes.Equal(version, []byte{indexesVersion}):
		ps, err := v.migrateIndexes(slotData)
		if err != nil {
			return nil, fmt.Errorf("build the record indexes: %w", err)
		}
		problems = append(problems, ps...)
	case crashed:
		ps, err := v.reclaimSlots(slotData, nil)
		problems = append(problems, ps...)
		if err != nil {
			problems = append(problems, fmt.Sprintf("the records could not all be read, so key slots left by an interrupted change were not zeroed: %v", err))
		}
	}
	// While the vault is open, commits do not write bbolt's free-page
	// list: with many free pages (23,700 after a 1M-record fill: 190 KB
	// of list) every commit rewrote it, and a single import ran at 480/s
	// instead of 690-1,280/s. Close writes it once; after a crash bbolt
	// rebuilds it at Open from the page headers (1.1 s at 1M records).
	if err := v.db.Update(func(tx *bolt.Tx) error {
		tx.DB().NoFreelistSync = true
		return tx.Bucket(bucketMeta).Put([]byte(runningName), []byte{1})
	}); err != nil {
		problems = append(problems, fmt.Sprintf("could not mark the vault open (after a crash now, the next start will not look for key slots left behind): %v", err))
	}
	return problems, nil
}

// walk calls fn with every record (each), its secret opened with
// slotData (the content of vault.keys) and opened reporting whether it
// opened (false: the slot no longer opens it, and p is marked destroyed;
// true too for a record with nothing sealed).
func (v *Vault) walk(slotData []byte, fn func(p *PSK, opened bool) error) error {
	nslots := uint32(len(slotData) / slotSize)
	now := v.now().UTC().Truncate(time.Second)
	var ferr error
	err := v.each(false, func(p *PSK) bool {
		ok := true
		if p.KeySlot != 0 {
			err := errShredded
			if p.KeySlot < nslots {
				err = openRecord(slotData[int(p.KeySlot)*slotSize:int(p.KeySlot+1)*slotSize], p)
			}
			if err != nil {
				markDestroyed(p, now)
				ok = false
			}
		}
		p.opened = true
		ferr = fn(p, ok)
		return ferr == nil
	})
	return errors.Join(err, ferr)
}

// reclaimSlots walks every record and zeroes the non-zero key slots that
// no record's secret opens with: the DEKs of creates a crash interrupted
// before their record was committed. Only a crash leaves such slots (a
// change that fails zeroes its own), so Open runs this only after one, or
// with a migration: O(N) then. each, when set, is called with every
// record on the way. It returns the records found destroyed and a failure
// to zeroe as problems, and the error of the walk or of each.
func (v *Vault) reclaimSlots(slotData []byte, each func(*PSK) error) (problems []string, err error) {
	inUse := make([]bool, len(slotData)/slotSize)
	err = v.walk(slotData, func(p *PSK, opened bool) error {
		switch {
		case !opened:
			problems = append(problems, destroyedProblem(p))
		case p.KeySlot != 0:
			inUse[p.KeySlot] = true
		}
		if each != nil {
			return each(p)
		}
		return nil
	})
	if err != nil {
		return problems, err
	}
	if _, err := v.slots.scan(slotData, func(slot uint32) bool { return inUse[slot] }); err != nil {
		problems = append(problems, fmt.Sprintf("key slots left by an interrupted change not zeroed yet: %v", err))
	}
	return problems, nil
}

func destroyedProblem(p *PSK) string {
	return fmt.Sprintf("PSK %x: its key slot no longer opens its sealed handle (destroyed by a change a crash interrupted, or vault.keys is not this vault.db's): treated as destroyed", p.Identity)
}

// migrateIndexes builds the indexes and counts (records.go) of a vault
// made before them, zeroes the key slots no record names, and converts
// the records written before vault.keys (handles in clear). The indexes
// are rebuilt from nothing, so an interrupted build is simply redone.
func (v *Vault) migrateIndexes(slotData []byte) ([]string, error) {
	var problems []string
	err := v.db.Update(func(tx *bolt.Tx) error {
		for _, b := range indexBuckets {
			if tx.Bucket(b) != nil {
				if err := tx.DeleteBucket(b); err != nil {
					return err
				}
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Delete([]byte(countsName))
	})
	if err != nil {
		return nil, err
	}
	var legacy, batch []*PSK
	flush := func() error {
		err := v.db.Update(func(tx *bolt.Tx) error {
			for _, p := range batch {
				if err := indexPut(tx, nil, p); err != nil {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
		return err
	}
	problems, err = v.reclaimSlots(slotData, func(p *PSK) error {
		if p.KeySlot == 0 && hasSecret(p) {
			legacy = append(legacy, p) // a handle in clear: before vault.keys
		}
		batch = append(batch, p)
		if len(batch) == 4096 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return nil, err
	}
	if len(legacy) > 0 {
		if err := v.convert(legacy); err != nil {
			problems = append(problems, fmt.Sprintf("%d records written before vault.keys keep their handles in clear until the next start: %v", len(legacy), err))
		}
	}
	err = v.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte(indexesName), []byte{indexesVersion}) })
	return problems, err
}

// markDestroyed makes p the record of a PSK whose key material is gone:
// no handle, no imported keys, and, while it was live, KeyMissing, so that
// derivation is refused and check reports it.
func markDestroyed(p *PSK, now time.Time) {
	p.Handle, p.KeySlot, p.Sealed = nil, 0, nil
	for i := range p.Finalized {
		p.Finalized[i].Box = nil
	}
	if p.State == StateActive && p.DeletePending.IsZero() && p.KeyMissing.IsZero() {
		p.KeyMissing = now
	}
}

// convert moves the handles of records written before vault.keys (in
// clear in vault.db) into sealed secrets, in one transaction, then
// rewrites vault.db once so that no freed page keeps them in clear. When
// that rewrite fails (no room for a second copy) CompactionPending says so
// and the daemon retries, as it always has.
func (v *Vault) convert(ps []*PSK) error {
	slots, deks, err := v.slots.allocN(len(ps))
	if err != nil {
		return err
	}
	next := make([]*PSK, len(ps))
	for i, p := range ps {
		n := p.clone()
		n.KeySlot = slots[i]
		if n.Sealed, err = sealRecord(deks[i], slots[i], n); err != nil {
			break
		}
		next[i] = n
	}
	for _, d := range deks {
		clear(d)
	}
	if err == nil {
		err = v.db.Update(func(tx *bolt.Tx) error {
			b := writeBucket(tx, bucketPSKs)
			for _, n := range next {
				raw, err := diskRecord(n)
				if err != nil {
					return err
				}
				if err := b.Put(recordKey(n.Identity), raw); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		v.slots.shred(slots...)
		v.slots.release(slots...)
		return err
	}
	// The records' earlier versions, handles in clear, are in freed pages.
	return v.db.compact()
}

// store writes next (nil: delete) in place of prev (nil: a new record),
// with extra (when set) in the same transaction, and updates the index.
// The caller holds v.wmu and has checked that prev is the current record.
//
// The secret (handle, boxes) decides the key slot: kept when next's
// secret is prev's or extends it; a new slot when it is new or drops part
// of prev's (the old slot is then noted in the transaction and zeroed
// after it); none when next has no secret, in which case prev's slot is
// zeroed before the transaction, so that a crash can only leave a record
// whose key is destroyed, never a destroyed record whose key survives.
func (v *Vault) store(identity []byte, prev, next *PSK, extra func(*bolt.Tx) error) error {
	if prev != nil && !prev.opened {
		return fmt.Errorf("%w: a record read without its secret cannot be changed", ErrInvalid)
	}
	var prevSlot uint32
	if prev != nil {
		prevSlot = prev.KeySlot
	}
	var newSlot, shredFirst, shredAfter uint32
	legacyDestroyed := false
	if next != nil {
		next.KeySlot, next.Sealed = 0, nil
	}
	switch {
	case next != nil && hasSecret(next) && prevSlot != 0 && secretPrefix(prev, next):
		next.KeySlot = prevSlot
		if secretEqual(prev, next) {
			next.Sealed = prev.Sealed
			break
		}
		dek, err := v.slots.read(prevSlot)
		if err != nil {
			return err
		}
		next.Sealed, err = sealRecord(dek, prevSlot, next)
		clear(dek)
		if err != nil {
			return err
		}
	case next != nil && hasSecret(next):
		slot, dek, err := v.slots.alloc()
		if err != nil {
			return fmt.Errorf("new key slot: %w", err)
		}
		next.KeySlot, newSlot, shredAfter = slot, slot, prevSlot
		next.Sealed, err = sealRecord(dek, slot, next)
		clear(dek)
		if err != nil {
			v.slots.shred(slot)
			v.slots.release(slot)
			return err
		}
	default:
		shredFirst = prevSlot
		legacyDestroyed = prev != nil && prevSlot == 0 && hasSecret(prev)
	}
	if shredFirst != 0 {
		if err := v.slots.shred(shredFirst); err != nil {
			return fmt.Errorf("destroy the record's key slot: %w", err)
		}
	}
	var raw []byte
	if next != nil {
		var err error
		if raw, err = diskRecord(next); err != nil {
			return err
		}
	}
	err := v.db.Update(func(tx *bolt.Tx) error {
		b := writeBucket(tx, bucketPSKs)
		if next == nil {
			if err := b.Delete(recordKey(identity)); err != nil {
				return err
			}
		} else if err := b.Put(recordKey(identity), raw); err != nil {
			return err
		}
		if shredAfter != 0 {
			if err := shredNote(tx, shredAfter); err != nil {
				return err
			}
		}
		if err := indexPut(tx, prev, next); err != nil {
			return err
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	})
	if err != nil {
		if newSlot != 0 {
			v.slots.shred(newSlot)
			v.slots.release(newSlot)
		}
		if shredFirst != 0 {
			// The key material is destroyed although the record change is
			// not written: the record (on disk, and now here) is that of
			// a destroyed key.
			// Reading it back opens nothing: it is read as destroyed.
			v.changes.notify()
		}
		return err
	}
	if next != nil {
		next.disk, next.opened = raw, true
	}
	v.changes.notify()
	if shredFirst != 0 {
		v.slots.release(shredFirst)
	}
	if shredAfter != 0 {
		// Committed: the record names the new slot. A failure here leaves
		// the note, and Open zeroes the slot.
		if v.slots.shred(shredAfter) == nil && v.db.Update(func(tx *bolt.Tx) error { return dropShredNote(tx, shredAfter) }) == nil {
			v.slots.release(shredAfter)
		}
	}
	if legacyDestroyed {
		// A record converted from the old format only if Open could not:
		// its handle is in clear in freed pages, which only a rewrite
		// purges.
		if err := v.db.compact(); err != nil {
			return fmt.Errorf("%w: %w", ErrCompact, err)
		}
	}
	return nil
}

func secretEqual(a, b *PSK) bool {
	if !bytes.Equal(a.Handle, b.Handle) || len(a.Finalized) != len(b.Finalized) {
		return false
	}
	for i := range a.Finalized {
		if !bytes.Equal(a.Finalized[i].Box, b.Finalized[i].Box) {
			return false
		}
	}
	return true
}

// sealBatch gives each record of ps that has a secret a new key slot (one
// fdatasync for all) and its sealed secret, and returns the records as
// stored and the slots taken (which the caller zeroes and releases if the
// records are not committed).
func (v *Vault) sealBatch(ps []*PSK) ([][]byte, []uint32, error) {
	var sealed []*PSK
	for _, p := range ps {
		p.KeySlot, p.Sealed = 0, nil
		if hasSecret(p) {
			sealed = append(sealed, p)
		}
	}
	var slots []uint32
	if len(sealed) > 0 {
		var deks [][]byte
		var err error
		if slots, deks, err = v.slots.allocN(len(sealed)); err != nil {
			return nil, nil, err
		}
		for i, p := range sealed {
			p.KeySlot = slots[i]
			if err == nil {
				p.Sealed, err = sealRecord(deks[i], slots[i], p)
			}
			clear(deks[i])
		}
		if err != nil {
			v.slots.shred(slots...)
			v.slots.release(slots...)
			return nil, nil, err
		}
	}
	raws := make([][]byte, len(ps))
	for i, p := range ps {
		raw, err := diskRecord(p)
		if err != nil {
			v.slots.shred(slots...)
			v.slots.release(slots...)
			return nil, nil, err
		}
		raws[i] = raw
	}
	return raws, slots, nil
}
