package vault

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Records on demand (issue 12).
//
// The vault keeps no record in memory. Every read (a derivation, a
// lifecycle change, a page of list or check) takes the record from
// vault.db in a bbolt read transaction, decodes it and opens its sealed
// secret with the DEK read from its key slot (keyslots.go). bbolt's read
// transactions see a consistent snapshot and never wait for the writer (a
// commit's fdatasync included), so derivations never wait behind a change.
// Memory does not grow with the number of records, and Open reads only the
// metadata: no record is decoded at start.
//
// What the rules need about other records is kept in index buckets,
// updated in the same transaction as the record (indexPut):
//
//	by-key       SHA-256(fingerprint) || SHA-256(identity) -> identity
//	             every record with a key fingerprint, revoked ones
//	             included (the key-reuse rules, check.go, policy_import.go)
//	by-skeleton  SHA-256(UTS #39 skeleton) || SHA-256(identity) -> identity
//	             every text identity (the confusable-identity rule)
//	by-expiry    not_after (12 bytes, ordered) || SHA-256(identity) -> identity
//	             the active records that have a not_after (Stats, Sweep)
//	unfinished   SHA-256(identity) -> identity
//	             records a change left unfinished: a pending delete, or a
//	             revoked or finalized record still naming its key
//	             (reconcile.go)
//
// and the meta bucket counts the records by state ("counts"). A lookup in
// an index is a prefix seek: O(log N). A vault written before the indexes
// existed has them built once at Open (migrateIndexes).

var (
	bucketByKey      = []byte("by-key")
	bucketBySkeleton = []byte("by-skeleton")
	bucketByExpiry   = []byte("by-expiry")
	bucketUnfinished = []byte("unfinished")

	indexBuckets = [][]byte{bucketByKey, bucketBySkeleton, bucketByExpiry, bucketUnfinished}
)

const (
	// indexesName is the meta key holding the version of the index layout
	// above; absent in a vault made before it.
	indexesName    = "indexes"
	indexesVersion = 1
	// countsName holds the number of active and of revoked records, two
	// 8-byte big-endian numbers.
	countsName = "counts"
	// runningName is present while a process has the vault open: found
	// at Open, the last process did not close it (a crash), and Open
	// looks for the key slots the crash may have left (reclaimSlots).
	runningName = "running"
)

// writeBucket is bucket name of tx, to be written. Its pages are split
// when 90 % full instead of bbolt's default 50 %: records mostly arrive in
// identity order (provisioning runs, batch imports), where half-full pages
// would double vault.db (measured: 46 % of the record pages in use after
// 100,000 batch imports), and every page of it is mapped and read by list,
// check and the derivations.
func writeBucket(tx *bolt.Tx, name []byte) *bolt.Bucket {
	b := tx.Bucket(name)
	b.FillPercent = 0.9
	return b
}

func sum256(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// expiryKey orders not_after instants: the Unix second with its sign bit
// flipped, then the nanoseconds, both big-endian.
func expiryKey(t time.Time) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 12+sha256.Size), uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(k, uint32(t.Nanosecond()))
}

func expiryTime(k []byte) time.Time {
	return time.Unix(int64(binary.BigEndian.Uint64(k)^(1<<63)), int64(binary.BigEndian.Uint32(k[8:12]))).UTC()
}

// unfinished reports whether a change left p for the reconciliation to
// finish (reconcile.go).
func unfinished(p *PSK) bool {
	return !p.DeletePending.IsZero() || (len(p.Handle) > 0 && (p.State == StateRevoked || p.IsFinalized()))
}

// indexEntry is one key of an index bucket; its value is the identity.
type indexEntry struct {
	bucket []byte
	key    []byte
}

// indexEntries are the index keys of record p (none for nil).
func indexEntries(p *PSK) []indexEntry {
	if p == nil {
		return nil
	}
	id := sum256(p.Identity)
	var out []indexEntry
	if len(p.Fingerprint) > 0 {
		out = append(out, indexEntry{bucketByKey, append(sum256(p.Fingerprint), id...)})
	}
	if sk, ok := skeletonOf(p.Identity); ok {
		out = append(out, indexEntry{bucketBySkeleton, append(sum256([]byte(sk)), id...)})
	}
	if expires(p) {
		out = append(out, indexEntry{bucketByExpiry, append(expiryKey(p.NotAfter), id...)})
	}
	if unfinished(p) {
		out = append(out, indexEntry{bucketUnfinished, id})
	}
	return out
}

// indexPut updates, in tx, the indexes and counts for the record of one
// identity going from old to next (either nil).
func indexPut(tx *bolt.Tx, old, next *PSK) error {
	oldE, newE := indexEntries(old), indexEntries(next)
	has := func(es []indexEntry, e indexEntry) bool {
		for _, x := range es {
			if bytes.Equal(x.bucket, e.bucket) && bytes.Equal(x.key, e.key) {
				return true
			}
		}
		return false
	}
	for _, e := range oldE {
		if !has(newE, e) {
			if err := writeBucket(tx, e.bucket).Delete(e.key); err != nil {
				return err
			}
		}
	}
	for _, e := range newE {
		if !has(oldE, e) {
			if err := writeBucket(tx, e.bucket).Put(e.key, next.Identity); err != nil {
				return err
			}
		}
	}
	if old != nil && next != nil && old.State == next.State {
		return nil
	}
	c := readCounts(tx)
	if old != nil {
		c.add(old.State, -1)
	}
	if next != nil {
		c.add(next.State, 1)
	}
	return tx.Bucket(bucketMeta).Put([]byte(countsName), c.encode())
}

// counts are the records by state, kept in the meta bucket.
type counts struct{ active, revoked int64 }

func (c *counts) add(s State, d int64) {
	if s == StateRevoked {
		c.revoked += d
	} else {
		c.active += d
	}
}

func (c counts) encode() []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(c.active)), uint64(c.revoked))
}

func readCounts(tx *bolt.Tx) counts {
	b := tx.Bucket(bucketMeta).Get([]byte(countsName))
	if len(b) != 16 {
		return counts{}
	}
	return counts{int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))}
}

// idsUnder returns the identities (the values) of the keys of bucket that
// start with prefix.
func idsUnder(tx *bolt.Tx, bucket, prefix []byte) [][]byte {
	var out [][]byte
	c := tx.Bucket(bucket).Cursor()
	for k, val := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, val = c.Next() {
		out = append(out, bytes.Clone(val))
	}
	return out
}

// sameSkeleton returns the stored text identities with id's skeleton.
func sameSkeleton(tx *bolt.Tx, id []byte) skeletons {
	sk, ok := skeletonOf(id)
	if !ok {
		return skeletons{}
	}
	return skeletons{sk: idsUnder(tx, bucketBySkeleton, sum256([]byte(sk)))}
}

// withKey returns the identities of the records made with the key whose
// fingerprint is fp, revoked ones included.
func withKey(tx *bolt.Tx, fp []byte) [][]byte {
	return idsUnder(tx, bucketByKey, sum256(fp))
}

// liveWithKey returns the identities of the live records (holdsKey) made
// with p's key, p's own among them when the index lists it (p, read in the
// same transaction, is not read again).
func liveWithKey(tx *bolt.Tx, p *PSK) ([][]byte, error) {
	var out [][]byte
	for _, id := range withKey(tx, p.Fingerprint) {
		if bytes.Equal(id, p.Identity) {
			if holdsKey(p) {
				out = append(out, id)
			}
			continue
		}
		o, err := peekTx(tx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if holdsKey(o) {
			out = append(out, id)
		}
	}
	return out, nil
}

// peekTx decodes the record for identity without opening its sealed
// secret (no handle, no boxes): for reading its other fields only. A
// record read this way is never written back (store refuses it).
func peekTx(tx *bolt.Tx, identity []byte) (*PSK, error) {
	raw := tx.Bucket(bucketPSKs).Get(recordKey(identity))
	if raw == nil {
		return nil, ErrNotFound
	}
	p, err := decodeRecord(raw)
	if err != nil {
		return nil, fmt.Errorf("read PSK record %x: %w", sum256(identity)[:8], err)
	}
	if !bytes.Equal(p.Identity, identity) {
		return nil, fmt.Errorf("%w: the record stored under identity %x names another identity", ErrInvalid, sum256(identity)[:8])
	}
	p.disk = bytes.Clone(raw)
	return p, nil
}

// readTx reads the record for identity and opens its sealed secret.
func (v *Vault) readTx(tx *bolt.Tx, identity []byte) (*PSK, error) {
	p, err := peekTx(tx, identity)
	if err != nil {
		return nil, err
	}
	return p, v.openSecret(p)
}

// get reads the record for identity, its secret opened: ErrNotFound when
// there is none.
func (v *Vault) get(identity []byte) (*PSK, error) {
	var p *PSK
	err := v.db.View(func(tx *bolt.Tx) error {
		var err error
		p, err = v.readTx(tx, identity)
		return err
	})
	return p, err
}

// peek reads the record for identity without its secret.
func (v *Vault) peek(identity []byte) (*PSK, error) {
	var p *PSK
	err := v.db.View(func(tx *bolt.Tx) error {
		var err error
		p, err = peekTx(tx, identity)
		return err
	})
	return p, err
}

// openSecret fills p's handle and boxes from its sealed secret. A slot
// that no longer opens it (zeroed by a change a crash interrupted, or
// reused since) means the key material is destroyed: p becomes the record
// of a destroyed key (markDestroyed). Failing to read the slot file is an
// error, never taken for a destroyed key.
func (v *Vault) openSecret(p *PSK) error {
	p.opened = true
	if p.KeySlot == 0 {
		return nil // nothing sealed, or a record from before vault.keys (migrateIndexes)
	}
	dek, err := v.slots.read(p.KeySlot)
	if err == nil {
		err = openRecord(dek, p)
		clear(dek)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errShredded):
		markDestroyed(p, v.now().UTC().Truncate(time.Second))
		return nil
	default:
		return fmt.Errorf("open PSK record %x: %w", sum256(p.Identity)[:8], err)
	}
}

// each calls fn with every record in identity-byte order, secrets opened
// when open is set, until fn returns false. It reads in pages, each in a
// read transaction of its own, so that it holds neither a transaction nor
// more than a page of records at a time.
func (v *Vault) each(open bool, fn func(*PSK) bool) error {
	v.walks.Add(1)
	var after []byte
	for {
		ps, next, err := v.page(after, eachPage, open)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if !fn(p) {
				return nil
			}
		}
		if next == nil {
			return nil
		}
		after = next
	}
}

const eachPage = 512

// expiredAt returns the active records past their not_after at now, from
// the by-expiry index, without their secrets.
func (v *Vault) expiredAt(now time.Time) ([]*PSK, error) {
	var out []*PSK
	limit := expiryKey(now)
	err := v.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketByExpiry).Cursor()
		for k, id := c.First(); k != nil && bytes.Compare(k[:12], limit) <= 0; k, id = c.Next() {
			p, err := peekTx(tx, id)
			if err != nil {
				return err
			}
			out = append(out, p)
		}
		return nil
	})
	return out, err
}
