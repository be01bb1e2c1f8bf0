package vault

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Paged reads of the records (issue 12): list and check a vault of any
// size a page at a time, so that neither the daemon nor its client holds a
// whole answer for a million records.
//
// Order is the database's key order, which is identity-byte order
// (identities of 32 KiB or more, stored under a truncated key, sort by
// their first 32,736 bytes and then a hash; recordKey). A page resumes
// strictly after the identity it was given, so a record that exists from
// the first page to the last is listed exactly once, whatever is imported
// or deleted meanwhile; one imported or deleted meanwhile may or may not
// be listed.

// ListPage returns at most limit records whose identity sorts after after
// (nil: from the first), in identity-byte order, and next, the identity to
// pass as after for the following page: nil when there is nothing after
// this page. O(log N) to find the page, O(limit) to read it, all in one
// read transaction (records.go).
func (v *Vault) ListPage(after []byte, limit int) (recs []*PSK, next []byte, err error) {
	if limit <= 0 {
		return nil, nil, fmt.Errorf("%w: page limit must be positive, got %d", ErrInvalid, limit)
	}
	return v.page(after, limit, true)
}

// page is ListPage, with the records' secrets opened only when open is set.
func (v *Vault) page(after []byte, limit int, open bool) (recs []*PSK, next []byte, err error) {
	more := false
	err = v.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketPSKs).Cursor()
		var k, val []byte
		if after == nil {
			k, val = c.First()
		} else {
			rk := recordKey(after)
			if k, val = c.Seek(rk); k != nil && bytes.Equal(k, rk) {
				k, val = c.Next()
			}
		}
		for ; k != nil; k, val = c.Next() {
			if len(recs) == limit {
				more = true
				return nil
			}
			p, err := decodeRecord(val)
			if err != nil {
				return fmt.Errorf("read PSK record %x: %w", sum256(k)[:8], err)
			}
			p.disk = bytes.Clone(val)
			if open {
				if err := v.openSecret(p); err != nil {
					return err
				}
			}
			recs = append(recs, p)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if more && len(recs) > 0 {
		next = bytes.Clone(recs[len(recs)-1].Identity)
	}
	return recs, next, nil
}

// CheckPage audits the records ListPage(after, limit) returns, each
// against the whole vault (confusable identities and key reuse are looked
// up in the indexes), and returns the page's report and the next cursor.
// The counts are the page's; the reconciliation at start is reported on
// the first page (after nil) only. Summed over all pages, the counts are
// those of Check.
func (v *Vault) CheckPage(after []byte, limit int) (*Report, []byte, error) {
	psks, next, err := v.ListPage(after, limit)
	if err != nil {
		return nil, nil, err
	}
	now := v.now()
	r := &Report{Node: v.cfg.NodeID, PSKs: make([]Audit, 0, len(psks))}
	known := skeletons{}
	fps := map[string][][]byte{}
	err = v.db.View(func(tx *bolt.Tx) error {
		for _, p := range psks {
			for sk, ids := range sameSkeleton(tx, p.Identity) {
				known[sk] = ids
			}
			if holdsKey(p) {
				k := string(p.Fingerprint)
				if _, done := fps[k]; done {
					continue
				}
				live, err := liveWithKey(tx, p)
				if err != nil {
					return err
				}
				fps[k] = live
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, p := range psks {
		r.add(v.audit(p, fps, known, now))
	}
	if after == nil {
		if rec := v.Reconciliation(); len(rec.Orphans) > 0 || len(rec.Problems) > 0 || rec.CreatesUndone+rec.DeletesFinished+rec.HandlesCleared+rec.KeysChecked > 0 {
			r.Reconciliation = &rec
			r.Errors += len(rec.Orphans) + len(rec.Problems)
		}
	}
	return r, next, nil
}
