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

// ListPage returns copies of at most limit records whose identity sorts
// after after (nil: from the first), in identity-byte order, and next, the
// identity to pass as after for the following page: nil when there is
// nothing after this page.
//
// This version walks the database's key order with a bbolt cursor (O(log N)
// to find the page, O(limit) to read it) and takes each record from the
// in-memory index, so a page costs no record decoding.
func (v *Vault) ListPage(after []byte, limit int) (recs []*PSK, next []byte, err error) {
	if limit <= 0 {
		return nil, nil, fmt.Errorf("%w: page limit must be positive, got %d", ErrInvalid, limit)
	}
	var ids [][]byte
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
			if len(ids) == limit {
				more = true
				return nil
			}
			id := k
			if len(k) >= bolt.MaxKeySize {
				p, err := decodeRecord(val)
				if err != nil {
					return fmt.Errorf("read PSK record %x: %w", k[:16], err)
				}
				id = p.Identity
			}
			ids = append(ids, bytes.Clone(id))
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	recs = make([]*PSK, 0, len(ids))
	v.mu.RLock()
	for _, id := range ids {
		// A record deleted since the cursor read it is left out.
		if p := v.psks[string(id)]; p != nil {
			recs = append(recs, p)
		}
	}
	v.mu.RUnlock()
	for i, p := range recs {
		recs[i] = p.clone() // records are never edited in place
	}
	if more && len(ids) > 0 {
		next = ids[len(ids)-1]
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
	v.mu.RLock()
	for _, p := range psks {
		if sk, ok := skeletonOf(p.Identity); ok {
			known[sk] = v.skel[sk] // never edited in place (removeID)
		}
		if holdsKey(p) {
			k := string(p.Fingerprint)
			if _, done := fps[k]; done {
				continue
			}
			var live [][]byte
			for _, id := range v.sameKey[k] {
				if o := v.psks[string(id)]; o != nil && holdsKey(o) {
					live = append(live, id)
				}
			}
			fps[k] = live
		}
	}
	v.mu.RUnlock()
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
