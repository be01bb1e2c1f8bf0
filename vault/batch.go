package vault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pskvault/pskvault/importer"
)

// Batch import: many PSKs in one request, one database transaction, all or
// nothing (issue 12, docs/API.md "POST /v1/psks/import-batch").
//
// Entries are read one at a time from next, so the caller can stream them
// from a request body without holding it whole. Each entry goes through
// every check a single Import makes (checkImport, preparePolicy: identity
// rules, stack limits, entropy, key reuse against the vault) plus the same
// rules between the entries of the batch (an identity given twice, two
// confusable identities, one key under two identities), then its key is
// stored in the backend. Only when every entry has passed are the records
// written, in one bbolt transaction that also drops the PKCS#11 intents.
// When an entry fails, the keys the backend already made for earlier
// entries are destroyed (and their intents dropped), no record is written,
// and the remaining entries are still read and checked, without touching
// the backend, so that one answer lists up to MaxBatchErrors problems.

// MaxBatchEntries caps the entries of one batch: the records of a batch
// are held in memory until its one transaction commits. A provisioning
// run of more PSKs sends several batches, each all or nothing.
const MaxBatchEntries = 10_000

// MaxBatchErrors caps the per-entry errors one failed batch reports.
const MaxBatchErrors = 100

// ErrBatch is wrapped by every failure of ImportBatch that refused the
// batch (a *BatchError); match with errors.Is.
var ErrBatch = errors.New("batch import refused: nothing was imported")

// EntryError is one entry's problem: its 0-based index in the batch and
// why it was refused. It never holds key material.
type EntryError struct {
	Index int
	Err   error
}

func (e *EntryError) Error() string { return fmt.Sprintf("entry %d: %v", e.Index, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// BatchError is a refused batch: nothing of it was kept. Entries lists
// the problems found (at most MaxBatchErrors, in entry order); Read is how
// many entries were read before the batch ended.
type BatchError struct {
	Entries   []*EntryError
	Read      int
	Truncated bool // more entries failed than Entries lists
	// Cleanup is set when destroying the keys already made for earlier
	// entries failed: they are left in the backend (reported by check as
	// orphans, or destroyed at the next start when an intent names them).
	Cleanup error
}

func (e *BatchError) Error() string {
	msg := fmt.Sprintf("%v (%d entries read)", ErrBatch, e.Read)
	if len(e.Entries) > 0 {
		msg += ": " + e.Entries[0].Error()
		if n := len(e.Entries) - 1; n > 0 {
			msg += fmt.Sprintf(" (and %d more problem(s))", n)
		}
	}
	if e.Cleanup != nil {
		msg += fmt.Sprintf("; destroying the keys already made failed: %v", e.Cleanup)
	}
	return msg
}

// Unwrap lets errors.Is match ErrBatch and the first entry's error.
func (e *BatchError) Unwrap() []error {
	out := []error{ErrBatch}
	if len(e.Entries) > 0 {
		out = append(out, e.Entries[0])
	}
	return out
}

// batchState is what the entries of one batch know of each other.
type batchState struct {
	ids   map[string]int   // identity -> entry
	skel  map[string][]int // skeleton -> entries with text identities
	fps   map[string]int   // key fingerprint -> entry
	keyed []*PSK           // records whose key the backend holds, in entry order
	idOf  map[int][]byte   // entry -> identity, for messages
}

// ImportBatch imports the entries next yields until it returns io.EOF, all
// or nothing. next returns a request whose Key the vault wipes once used
// (the caller need not keep it), or an error: io.EOF ends the batch, any
// other error refuses it, reported at the index it was reading. Finalize
// is refused in a batch (finalize afterwards). The returned records are in
// entry order. entryTimeout, when positive, bounds each entry's checks and
// backend work (a request's deadline for a single import); ctx bounds the
// whole batch.
func (v *Vault) ImportBatch(ctx context.Context, entryTimeout time.Duration, next func() (*ImportRequest, error)) ([]*PSK, error) {
	defer importer.BurnStack()
	st := &batchState{ids: map[string]int{}, skel: map[string][]int{}, fps: map[string]int{}, idOf: map[int][]byte{}}
	be := &BatchError{}
	failed := false
	refuse := func(i int, err error) {
		if !failed {
			failed = true
			// Nothing of the batch will be kept: destroy its keys now,
			// and check the rest without making more.
			be.Cleanup = v.dropBatchKeys(ctx, st.keyed)
			st.keyed = nil
		}
		if len(be.Entries) < MaxBatchErrors {
			be.Entries = append(be.Entries, &EntryError{Index: i, Err: err})
		} else {
			be.Truncated = true
		}
	}
	i := 0
	for ; ; i++ {
		req, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			refuse(i, err)
			// A request body that cannot be read any further ends the
			// batch; the entries read so far are all the batch has.
			if !errors.Is(err, ErrInvalid) {
				break
			}
			continue
		}
		if i >= MaxBatchEntries {
			clear(req.Key)
			refuse(i, fmt.Errorf("%w: a batch holds at most %d entries; send the rest in another batch", ErrInvalid, MaxBatchEntries))
			break
		}
		ectx, cancel := ctx, context.CancelFunc(func() {})
		if entryTimeout > 0 {
			ectx, cancel = context.WithTimeout(ctx, entryTimeout)
		}
		p, err := v.batchEntry(ectx, st, i, req, failed)
		cancel()
		clear(req.Key)
		if err != nil {
			refuse(i, err)
			continue
		}
		if p != nil {
			st.keyed = append(st.keyed, p)
		}
	}
	be.Read = i
	if failed {
		return nil, be
	}
	if err := ctx.Err(); err != nil {
		be.Cleanup = v.dropBatchKeys(ctx, st.keyed)
		be.Entries = []*EntryError{{Index: i, Err: fmt.Errorf("request ended: %w", err)}}
		return nil, be
	}
	if err := v.putBatch(st.keyed); err != nil {
		var ee *EntryError
		if errors.As(err, &ee) {
			be.Cleanup = v.dropBatchKeys(ctx, st.keyed)
			be.Entries = []*EntryError{ee}
			return nil, be
		}
		if cerr := v.dropBatchKeys(ctx, st.keyed); cerr != nil {
			err = errors.Join(err, fmt.Errorf("and destroying the batch's keys failed: %w", cerr))
		}
		return nil, err
	}
	out := make([]*PSK, len(st.keyed))
	for j, p := range st.keyed {
		out[j] = p.clone()
	}
	return out, nil
}

// batchEntry checks entry i against the vault and the batch so far and,
// unless dry, stores its key in the backend and returns its record.
func (v *Vault) batchEntry(ctx context.Context, st *batchState, i int, req *ImportRequest, dry bool) (*PSK, error) {
	if req.Finalize {
		return nil, fmt.Errorf("%w: finalize is not available in a batch import (finalize each PSK afterwards with psk finalize)", ErrInvalid)
	}
	if err := v.checkImport(req); err != nil {
		return nil, err
	}
	// Between the entries: the same identity twice, two identities an
	// operator cannot tell apart.
	if j, dup := st.ids[string(req.Identity)]; dup {
		return nil, fmt.Errorf("%w: %x is also entry %d of this batch", ErrExists, req.Identity, j)
	}
	sk, text := "", false
	if !req.RandomIdentity {
		if sk, text = skeletonOf(req.Identity); text {
			if js := st.skel[sk]; len(js) > 0 {
				return nil, fmt.Errorf("%w: identity is visually confusable with identity %x of entry %d of this batch (RFC 9257 section 6.1.1, SHOULD)", ErrIdentity, st.idOf[js[0]], js[0])
			}
		}
	}
	pol, err := v.preparePolicy(ctx, req)
	if err != nil {
		return nil, err
	}
	if len(pol.Fingerprint) > 0 {
		if j, dup := st.fps[string(pol.Fingerprint)]; dup {
			return nil, fmt.Errorf("%w: it is also the key of entry %d (identity %x) of this batch; give every pair of nodes its own key", ErrKeyReused, j, st.idOf[j])
		}
		st.fps[string(pol.Fingerprint)] = i
	}
	st.ids[string(req.Identity)] = i
	st.idOf[i] = req.Identity
	if text {
		st.skel[sk] = append(st.skel[sk], i)
	}
	if dry {
		return nil, nil
	}
	p, err := v.keyRecord(ctx, req, pol, func(ref KeyRef) error {
		return v.dropBatchKeys(ctx, []*PSK{{Handle: ref.Handle, Hash: ref.Hash}})
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// dropBatchKeys destroys the backend keys of records that were never
// written and drops their intents. It runs even when the request was
// cancelled (a client that hung up mid-batch): the keys must not stay.
func (v *Vault) dropBatchKeys(ctx context.Context, ps []*PSK) error {
	if len(ps) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var errs []error
	var gone [][]byte
	for _, p := range ps {
		err := v.guard.change(ctx, OpDelete, func() error { return v.backend.DeleteKey(ctx, KeyRef{Handle: p.Handle, Hash: p.Hash}) })
		if err != nil {
			errs = append(errs, fmt.Errorf("key of %x: %w", p.Identity, err))
			continue
		}
		gone = append(gone, p.Handle)
	}
	if len(gone) > 0 {
		err := v.db.Update(func(tx *bolt.Tx) error {
			for _, h := range gone {
				if err := dropIntent(tx, h); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("drop the intents of destroyed keys: %w", err))
		}
	}
	return errors.Join(errs...)
}

// putBatch writes the records of a batch in one transaction, provided no
// record with one of their identities or key fingerprints appeared since
// they were checked (a concurrent import). An *EntryError names the entry
// that lost the race (its index among ps, which is its index in the batch
// since a committed batch has no gaps).
func (v *Vault) putBatch(ps []*PSK) error {
	if len(ps) == 0 {
		return nil
	}
	v.wmu.Lock()
	defer v.wmu.Unlock()
	err := v.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPSKs)
		for i, p := range ps {
			if b.Get(recordKey(p.Identity)) != nil {
				return &EntryError{Index: i, Err: fmt.Errorf("%w: %x (imported meanwhile by another request)", ErrExists, p.Identity)}
			}
			if len(p.Fingerprint) > 0 {
				if ids := withKey(tx, p.Fingerprint); len(ids) > 0 {
					return &EntryError{Index: i, Err: fmt.Errorf("%w: it is the key of PSK %x (imported meanwhile by another request)", ErrKeyReused, ids[0])}
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Each record's handle is sealed under a data key of its own
	// (keyslots.go); the batch's keys are written with one fdatasync
	// before the records that name them are committed.
	raws, slots, err := v.sealBatch(ps)
	if err != nil {
		return fmt.Errorf("write the batch's PSK records: %w", err)
	}
	err = v.db.Update(func(tx *bolt.Tx) error {
		b := writeBucket(tx, bucketPSKs)
		for i, p := range ps {
			if err := b.Put(recordKey(p.Identity), raws[i]); err != nil {
				return err
			}
			if err := dropIntent(tx, p.Handle); err != nil {
				return err
			}
			if err := indexPut(tx, nil, p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		v.slots.shred(slots...)
		v.slots.release(slots...)
		return fmt.Errorf("write the batch's PSK records: %w", err)
	}
	for i, p := range ps {
		p.disk, p.opened = raws[i], true
	}
	v.changes.notify()
	return nil
}
