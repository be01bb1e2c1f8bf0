package vault

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Purging destroyed records from vault.db.
//
// For the soft and TPM backends the record's handle *is* the key (sealed
// under the KEK file, or wrapped by the TPM's storage parent), and a
// finalized PSK's record holds its sealed imported keys. Dropping them from
// the record is not enough: bbolt is copy-on-write and never zeroes a page
// it frees, so every earlier version of the record stays in vault.db until
// bbolt happens to reuse that page. Overwriting the value with zeros first
// does not help either: the overwrite is written to a new page and the old
// one is freed as is (TestZeroOverwriteLeavesOldBytes).
//
// Destruction no longer needs a rewrite: a record's secrets are sealed
// under a data key that is zeroed first (crypto-shredding, keyslots.go).
// The rewrite is kept for what still needs it: purging the handles in
// clear of a vault.db converted from before vault.keys (convert, store.go)
// and an explicit reclaim of space (Vault.Compact). bolt.Compact copies
// the live records into a fresh vault.db.tmp (0600, same directory,
// fsynced), which is renamed over vault.db, and the directory is fsynced.
// The new file only ever held live records; the old one is unlinked. A
// crash at any point leaves either the old or the new file under the name
// vault.db, both complete; a leftover vault.db.tmp is removed by the next
// compaction.
//
// Locking: boltStore.mu guards the *bolt.DB. Every transaction holds it
// shared (bbolt serializes writers itself); a compaction holds it
// exclusively, so no write can slip in between the copy and the swap, and
// reads wait for the swap (a compaction is never on the derive path's
// account: it runs only for the two cases above). Lock order: Vault.wmu
// (or auxKey.mu) before boltStore.mu, never the reverse.
//
// The new database is opened on vault.db.tmp and stays open across the
// rename, so bbolt's file lock never lapses and no other process can open
// the vault in between. The handle's Path() therefore still reports the
// temporary name; nothing in pskvault uses it.

// tmpSuffix names the compaction's temporary file, next to vault.db.
const tmpSuffix = ".tmp"

// ErrCompact wraps a failure to rewrite vault.db. After a destructive
// change the change itself was made (the error says so), but earlier
// versions of the destroyed record may remain in freed pages of the live
// file until the next successful compaction (the next destructive change,
// Compact, or the next Open; Open fails rather than run without one).
var ErrCompact = errors.New("rewriting vault.db to purge destroyed records failed (old copies of destroyed records may remain in its freed pages until the next successful compaction)")

// boltStore is the vault's database handle, swappable by a compaction.
type boltStore struct {
	mu   sync.RWMutex
	db   *bolt.DB
	path string // vault.db

	// fault, when set (tests only), is called at each compaction step and
	// aborts the compaction when it returns an error.
	fault func(step string) error

	// pending holds the error of the last compaction when it failed, until
	// one succeeds: freed pages may still hold destroyed records meanwhile.
	pending atomic.Pointer[error]

	// beforeUpdate, when set (tests only), is called at the start of every
	// Update, before it waits for the database.
	beforeUpdate atomic.Pointer[func()]

	// unlocked is the size of the mapping of vault.db last unlocked
	// (munlock.go), and unlockedAt its address: a write that leaves the
	// file larger, or the mapping elsewhere, unlocks it again.
	unlockMu   sync.Mutex
	unlocked   int64
	unlockedAt uintptr

	// warmGen counts the walks that map vault.db's pages (warm.go), the
	// latest of which runs; warmed counts those that finished.
	warmGen atomic.Int64
	warmed  atomic.Int64
}

// unlockMapping unlocks the mapping of vault.db when it may be new.
func (s *boltStore) unlockMapping(size int64) {
	s.unlockMu.Lock()
	defer s.unlockMu.Unlock()
	s.mu.RLock()
	db := s.db
	s.mu.RUnlock()
	if db == nil {
		return
	}
	if at := db.Info().Data; at != s.unlockedAt || size > s.unlocked {
		s.unlocked, s.unlockedAt = unlockMappings(s.path), at
		s.warm() // a new mapping: its pages are not mapped yet
	}
}

var errDBClosed = errors.New("vault database is closed")

// View runs a read-only transaction.
func (s *boltStore) View(fn func(*bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return errDBClosed
	}
	return s.db.View(fn)
}

// Update runs a read-write transaction.
func (s *boltStore) Update(fn func(*bolt.Tx) error) error {
	if f := s.beforeUpdate.Load(); f != nil {
		(*f)()
	}
	var size int64
	err := func() error {
		s.mu.RLock()
		defer s.mu.RUnlock()
		if s.db == nil {
			return errDBClosed
		}
		return s.db.Update(func(tx *bolt.Tx) error {
			err := fn(tx)
			size = tx.Size()
			return err
		})
	}()
	if err == nil {
		s.unlockMapping(size)
	}
	return err
}

// Close closes the database; later transactions fail.
func (s *boltStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	return err
}

func (s *boltStore) step(name string) error {
	if s.fault == nil {
		return nil
	}
	return s.fault(name)
}

// compact rewrites the database so that the file holds the live records
// and nothing else. See the comment at the top of this file.
func (s *boltStore) compact() error {
	s.mu.Lock()
	err := s.compactLocked()
	if err != nil {
		s.pending.Store(&err)
	} else {
		s.pending.Store(nil)
	}
	s.mu.Unlock()
	s.unlockMapping(math.MaxInt64) // a new file, a new mapping
	return err
}

func (s *boltStore) compactLocked() error {
	if s.db == nil {
		return errDBClosed
	}
	tmp := s.path + tmpSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", tmp, err)
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType, OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
		return OpenStateFile(name, flag|os.O_EXCL, perm) // removed just above: a new file or nothing
	}})
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	abort := func(err error) error {
		dst.Close()
		os.Remove(tmp)
		return err
	}
	// One transaction (txMaxSize 0): the new file then has no freed pages
	// holding intermediate copies, and a vault is small.
	if err := bolt.Compact(dst, s.db, 0); err != nil {
		return abort(fmt.Errorf("copy live records to %s: %w", tmp, err))
	}
	if err := dst.Sync(); err != nil {
		return abort(fmt.Errorf("sync %s: %w", tmp, err))
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return abort(err)
	}
	if err := s.step("rename"); err != nil {
		return abort(err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return abort(fmt.Errorf("replace %s: %w", s.path, err))
	}
	// From here vault.db is the new file (held open and locked by dst).
	old := s.db
	dst.NoFreelistSync = old.NoFreelistSync // as the vault runs (store.go start)
	s.db = dst
	return errors.Join(syncDir(filepath.Dir(s.path)), old.Close())
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// CompactionPending returns the error of the last compaction when it failed
// and none has succeeded since (nil otherwise): until one does, freed pages
// of vault.db may still hold destroyed records. Open starts the vault
// anyway when its start-up compaction fails (a full disk, typically); the
// daemon reports it and calls RetryCompaction until it succeeds.
func (v *Vault) CompactionPending() error {
	if p := v.db.pending.Load(); p != nil {
		return *p
	}
	return nil
}

// RetryCompaction runs a pending compaction when the file system holding
// vault.db has room for a second copy of it (with a margin), and reports
// whether none is pending any more. It does nothing when none is pending.
func (v *Vault) RetryCompaction() (done bool, err error) {
	if v.CompactionPending() == nil {
		return true, nil
	}
	if need, free, ok := v.db.room(); ok && free < need {
		return false, fmt.Errorf("%w: %d bytes free, a rewrite needs about %d", ErrNoSpace, free, need)
	}
	if err := v.Compact(); err != nil {
		return false, err
	}
	return true, nil
}

// room reports the space a compaction needs (the size of vault.db plus a
// margin) and the space free to this process on its file system.
func (s *boltStore) room() (need, free uint64, ok bool) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0, 0, false
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(s.path), &st); err != nil {
		return 0, 0, false
	}
	return uint64(fi.Size()) + 64<<10, st.Bavail * uint64(st.Bsize), true
}

// Compact rewrites vault.db so that it holds the live records only: no
// freed page keeps an earlier version of a record. The vault does this by
// itself after every destructive change and at Open; Compact is for
// callers that want to make sure (after a reported ErrCompact, say).
// Derivations keep working while it runs; other changes wait.
func (v *Vault) Compact() error {
	if err := v.db.compact(); err != nil {
		return fmt.Errorf("%w: %w", ErrCompact, err)
	}
	return nil
}
