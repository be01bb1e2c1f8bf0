// Package vault holds PSK records, enforces RFC 9257 policy and orchestrates
// RFC 9258 derivation: it checks whether a request may run, has the importer
// plan the HKDF-Expand blocks and has the backend answer each block with one
// HMAC under a key the backend never lets go of.
//
// Records live in a bbolt file in the state directory and are read on
// demand from its read transactions, which never wait for a writer
// (records.go); their secrets are sealed under data keys in vault.keys
// (keyslots.go).
package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pskvault/pskvault/importer"
)

// Vault errors; match with errors.Is.
var (
	ErrNotInitialized     = errors.New("vault not initialized")
	ErrAlreadyInitialized = errors.New("vault already initialized")
	ErrInvalid            = errors.New("invalid request")
	ErrNotFound           = errors.New("no such PSK")
	ErrExists             = errors.New("a PSK with this identity already exists")
	ErrKeyTooShort        = errors.New("key shorter than 128 bits (RFC 9257 section 6 requires at least 128 bits of entropy)")
	ErrNotParty           = errors.New("this node is not party to the PSK")
	ErrSameNode           = errors.New("client and server node must differ (RFC 9257 section 4.1: one client and one server)")
	ErrRevoked            = errors.New("PSK revoked")
	ErrExpired            = errors.New("PSK expired")
	ErrTargetNotAllowed   = errors.New("target not allowed for this PSK")
	// ErrNoSpace: the file system holding the state directory is full (or
	// the daemon's quota is used up); the change was not made. Errors
	// that carry ENOSPC or EDQUOT from the system match it too (IsNoSpace).
	ErrNoSpace = errors.New("no space left for the vault's state")
)

// IsNoSpace reports whether err comes from a full file system or an
// exhausted quota.
func IsNoSpace(err error) bool {
	return errors.Is(err, ErrNoSpace) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// MinKeyLen is the shortest EPSK accepted: 128 bits (RFC 9257 section 6).
const MinKeyLen = 16

// MaxKeyLen bounds imported EPSKs; nothing legitimate is longer.
const MaxKeyLen = 1024

// GeneratedKeyLen is the size of keys the vault generates: 256 bits.
const GeneratedKeyLen = 32

const dbFile = "vault.db"

var (
	bucketMeta = []byte("meta")
	bucketPSKs = []byte("psks")
	nodeIDRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)
)

// CheckNodeID validates a node identifier: 1-64 characters of
// [A-Za-z0-9._:-], starting with a letter or digit.
func CheckNodeID(id string) error {
	if !nodeIDRe.MatchString(id) {
		return fmt.Errorf("%w: node id %q: want 1-64 characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit", ErrInvalid, id)
	}
	return nil
}

// Config is what init records about a vault.
type Config struct {
	NodeID  string `json:"node_id"`
	Backend string `json:"backend"` // backend URI
}

// Vault is an open vault. It is safe for concurrent use.
type Vault struct {
	dir     string
	db      boltStore // the bbolt file, swapped by compactions (compact.go)
	slots   *keySlots // vault.keys: the records' data keys (keyslots.go)
	cfg     Config
	backend Backend
	now     func() time.Time

	// wmu serializes the changes to records: a change holds it across its
	// checks and its database write. Readers (derivations among them) hold
	// no lock of the vault's: they read records from bbolt read
	// transactions (records.go), which never wait for the writer. Lock
	// order: wmu, then boltStore.mu (compact.go).
	wmu sync.Mutex

	aux auxKey // the auxiliary backend key (aux.go)

	guard backendGuard // deadlines against a stalled backend (guard.go)

	access atomic.Pointer[Access] // who may derive what (access.go)

	changes changes // wakes watchers after each change (watch.go)

	recon *Reconciliation // what the reconciliation at Open found and did (reconcile.go)

	walks atomic.Int64 // walks over every record (each), for tests
}

// Init creates a vault in dir (created 0700 if missing) for nodeID on the
// backend named by backendURI.
func Init(ctx context.Context, dir string, cfg Config) error {
	if err := CheckNodeID(cfg.NodeID); err != nil {
		return err
	}
	if cfg.Backend == "" {
		cfg.Backend = "soft"
	}
	if err := ensurePrivateDir(dir); err != nil {
		return err
	}
	path := filepath.Join(dir, dbFile)
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%w in %s", ErrAlreadyInitialized, dir)
	}
	vaultID := make([]byte, vaultIDLen)
	if _, err := rand.Read(vaultID); err != nil {
		return fmt.Errorf("OS RNG: %w", err)
	}
	b, err := OpenBackend(ctx, BackendConfig{URI: cfg.Backend, StateDir: dir, Init: true, VaultID: vaultID})
	if err != nil {
		return fmt.Errorf("open backend: %w", err)
	}
	defer b.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, OpenFile: OpenStateFile})
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer db.Close()
	slots, err := openKeySlots(filepath.Join(dir, keysFile), true)
	if err != nil {
		return fmt.Errorf("create %s: %w", keysFile, err)
	}
	defer slots.Close()
	raw, _ := json.Marshal(cfg)
	return db.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketPSKs); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketIntents); err != nil {
			return err
		}
		for _, b := range indexBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := m.Put([]byte(indexesName), []byte{indexesVersion}); err != nil {
			return err
		}
		if err := m.Put([]byte(countsName), counts{}.encode()); err != nil {
			return err
		}
		if err := m.Put([]byte(vaultIDName), vaultID); err != nil {
			return err
		}
		return m.Put([]byte("config"), raw)
	})
}

// Open opens an initialized vault and its backend. Only one process can
// hold a vault open: the database file is locked.
func Open(ctx context.Context, dir string) (*Vault, error) {
	path := filepath.Join(dir, dbFile)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s (run: pskvault init --node-id NAME)", ErrNotInitialized, dir, dbFile)
	}
	if err := ensurePrivateDir(dir); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond, OpenFile: OpenStateFile, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("vault %s is in use by another process (is a daemon already serving it?)", dir)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	v := &Vault{dir: dir, db: boltStore{db: db, path: path}, now: time.Now}
	v.access.Store(DefaultAccess(uint32(os.Geteuid())))
	// vault.keys is created here for a vault made before it existed
	// (its records are converted by load).
	slots, err := openKeySlots(filepath.Join(dir, keysFile), true)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", keysFile, err)
	}
	v.slots = slots
	loadProblems, err := v.start()
	if err != nil {
		v.slots.Close()
		db.Close()
		return nil, err
	}
	vaultID, idErr := v.ensureVaultID()
	v.backend, err = OpenBackend(ctx, BackendConfig{URI: v.cfg.Backend, StateDir: dir, VaultID: vaultID})
	if err != nil {
		v.slots.Close()
		v.db.Close()
		return nil, fmt.Errorf("open backend: %w", err)
	}
	// Only the soft backend is known never to stall: it only computes.
	v.guard.direct = v.backend.Info().Name == "soft"
	// Finish what a crash interrupted and compare the records with the
	// backend's keys (reconcile.go). Its problems are reported, not fatal:
	// the vault serves what it can, and `check` shows the rest.
	v.recon = v.reconcile(ctx)
	v.recon.Problems = append(v.recon.Problems, loadProblems...)
	if idErr != nil {
		v.recon.Problems = append(v.recon.Problems, idErr.Error())
	}
	return v, nil
}

// Close closes the backend and the database, marking the vault closed
// (a vault found still marked at Open was not closed: start).
func (v *Vault) Close() error {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	v.db.Update(func(tx *bolt.Tx) error {
		tx.DB().NoFreelistSync = false // this last commit writes it (start)
		return tx.Bucket(bucketMeta).Delete([]byte(runningName))
	})
	return errors.Join(v.backend.Close(), v.db.Close(), v.slots.Close())
}

// Config returns the vault's configuration.
func (v *Vault) Config() Config { return v.cfg }

// NodeID is this vault's node identifier.
func (v *Vault) NodeID() string { return v.cfg.NodeID }

// BackendInfo describes the vault's backend.
func (v *Vault) BackendInfo() BackendInfo { return v.backend.Info() }

// ImportRequest imports an EPSK (or a backend-wrapped PRK).
type ImportRequest struct {
	Identity   []byte
	Key        []byte // the EPSK; not retained, the caller zeroes it
	Hash       importer.Hash
	ClientNode string
	ServerNode string
	Targets    []Target // nil: AllTargets
	NotAfter   time.Time
	Params     map[string]string // backend-specific, passed through
	// Wrapped means Key is a PRK wrapped for this backend's hardware
	// (WrappedImporter); WrappedKeyBits is then the EPSK size the
	// provisioning side attests.
	Wrapped        bool
	WrappedKeyBits int
	// Bundle, when set, must authenticate under the key being imported
	// (docs/BUNDLE.md); otherwise nothing is kept and Import fails with
	// ErrBundleMAC.
	Bundle *BundleAuth
	origin string
	// generation and rotatedFrom, set by Rotate, make the record the next
	// generation of another from its first write.
	generation    int
	rotatedFrom   []byte
	PolicyRequest // RFC 9257 options (policy.go)
}

func (v *Vault) checkImport(req *ImportRequest) error {
	if err := v.prepareIdentity(req); err != nil {
		return err
	}
	// RFC 9258: external_identity<1..2^16-1>. An identity over
	// MaxDerivableIdentity bytes is kept but can never be derived (its
	// ImportedIdentity would exceed 65535 bytes); PolicyOf warns of it.
	if len(req.Identity) == 0 {
		return fmt.Errorf("%w: identity is empty", ErrInvalid)
	}
	if len(req.Identity) > importer.MaxIdentityLen {
		return fmt.Errorf("%w: identity is %d bytes: %w", ErrInvalid, len(req.Identity), importer.ErrIdentityTooLong)
	}
	if !req.Hash.Valid() {
		return fmt.Errorf("%w: %w", ErrInvalid, importer.ErrUnknownHash)
	}
	if !v.backend.Info().Supports(req.Hash) {
		return fmt.Errorf("%w: backend %s cannot hold %s keys", ErrUnsupported, v.backend.Info().Name, req.Hash)
	}
	if len(req.Group) > 0 {
		if err := v.checkGroup(req); err != nil {
			return err
		}
	} else if err := CheckNodeID(req.ClientNode); err != nil {
		return fmt.Errorf("client: %w", err)
	} else if err := CheckNodeID(req.ServerNode); err != nil {
		return fmt.Errorf("server: %w", err)
	} else if req.ClientNode == req.ServerNode {
		return ErrSameNode
	} else if req.ClientNode != v.cfg.NodeID && req.ServerNode != v.cfg.NodeID {
		return fmt.Errorf("%w: PSK is between %s and %s, this vault is node %s", ErrNotParty, req.ClientNode, req.ServerNode, v.cfg.NodeID)
	}
	bits := len(req.Key) * 8
	if req.Wrapped {
		bits = req.WrappedKeyBits
	}
	if bits < MinKeyLen*8 {
		return fmt.Errorf("%w: got %d bits", ErrKeyTooShort, bits)
	}
	if !req.Wrapped && len(req.Key) > MaxKeyLen {
		return fmt.Errorf("%w: key is %d bytes, limit %d", ErrInvalid, len(req.Key), MaxKeyLen)
	}
	if req.Targets == nil {
		req.Targets = append([]Target{}, AllTargets...)
	}
	for _, t := range req.Targets {
		if err := t.Protocol.Check(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if err := t.KDF.Check(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if !req.NotAfter.IsZero() && !req.NotAfter.After(v.now()) {
		return fmt.Errorf("%w: not-after %s is in the past", ErrInvalid, req.NotAfter.Format(time.RFC3339))
	}
	switch _, err := v.peek(req.Identity); {
	case err == nil:
		return fmt.Errorf("%w: %x", ErrExists, req.Identity)
	case !errors.Is(err, ErrNotFound):
		return err
	}
	return nil
}

// Import stores a PSK. The EPSK is extracted to a PRK here, handed to the
// backend, and wiped; only the backend handle is recorded.
func (v *Vault) Import(ctx context.Context, req ImportRequest) (*PSK, error) {
	// The dead frames of the checks, Extract and the backend held the EPSK
	// or the PRK.
	defer importer.BurnStack()
	if err := v.checkImport(&req); err != nil {
		return nil, err
	}
	pol, err := v.preparePolicy(ctx, &req)
	if err != nil {
		return nil, err
	}
	// A key stored but refused (bundle, KCV) is destroyed; the error
	// is the refusal's, as before.
	p, err := v.keyRecord(ctx, &req, pol, func(ref KeyRef) error { v.backend.DeleteKey(ctx, ref); return nil })
	if err != nil {
		return nil, err
	}
	if req.generation > 0 {
		p.Generation, p.RotatedFrom = req.generation, bytes.Clone(req.rotatedFrom)
	}
	if err := v.put(p, true); err != nil {
		v.backend.DeleteKey(ctx, KeyRef{Handle: p.Handle, Hash: req.Hash})
		return nil, err
	}
	if req.Finalize {
		fp, err := v.Finalize(ctx, p.Identity, FinalizeRequest{})
		if err != nil {
			// All or nothing: a PSK that was to be finalized at creation
			// is not left behind half done (nor, for Create, with a key
			// the peer never receives). The caller can simply retry.
			if derr := v.Delete(ctx, p.Identity); derr != nil && !errors.Is(derr, ErrNotFound) {
				err = errors.Join(err, fmt.Errorf("and removing the unfinished PSK failed: %w", derr))
			}
			return nil, fmt.Errorf("finalize at import (the PSK was not kept): %w", err)
		}
		return fp, nil
	}
	return p.clone(), nil
}

// storeKey has the backend keep req's key (Extract, then StoreKey; or
// ImportWrapped for a wrapped key) and returns the backend's handle. The PRK
// is wiped; the caller owns req.Key.
func (v *Vault) storeKey(ctx context.Context, req *ImportRequest) ([]byte, error) {
	var handle []byte
	var err error
	if req.Wrapped {
		wi, ok := v.backend.(WrappedImporter)
		if !ok {
			return nil, fmt.Errorf("%w: backend %s has no wrapped import", ErrUnsupported, v.backend.Info().Name)
		}
		err = v.guard.change(ctx, OpStore, func() (err error) {
			handle, err = wi.ImportWrapped(v.intentContext(ctx, "import", req.Identity, req.Hash), req.Key, req.Hash, req.Params)
			return err
		})
	} else {
		var prk []byte
		prk, err = importer.Extract(req.Hash, req.Key)
		if err != nil {
			return nil, err
		}
		err = v.guard.change(ctx, OpStore, func() (err error) {
			handle, err = v.backend.StoreKey(v.intentContext(ctx, "import", req.Identity, req.Hash), StoreRequest{PRK: prk, Hash: req.Hash, Label: keyLabel(req.Identity), Params: req.Params})
			return err
		})
		clear(prk)
	}
	if err != nil {
		return nil, fmt.Errorf("store key in %s backend: %w", v.backend.Info().Name, err)
	}
	return handle, nil
}

// keyRecord has the backend keep req's key, checks its bundle, computes
// its key check value and returns the record to write. A key the backend
// kept for a request then refused is handed to drop, whose error joins the
// refusal's.
func (v *Vault) keyRecord(ctx context.Context, req *ImportRequest, pol Policy, drop func(KeyRef) error) (*PSK, error) {
	handle, err := v.storeKey(ctx, req)
	if err != nil {
		return nil, err
	}
	ref := KeyRef{Handle: handle, Hash: req.Hash}
	refuse := func(err error) (*PSK, error) {
		if derr := drop(ref); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	if req.Bundle != nil {
		if err := v.verifyBundle(ctx, ref, req.Bundle); err != nil {
			return refuse(err)
		}
	}
	if pol.KCV, err = v.keyCheck(ctx, ref); err != nil {
		return refuse(fmt.Errorf("key check value: %w", err))
	}
	origin, bits := req.origin, len(req.Key)*8
	if req.Wrapped {
		bits = req.WrappedKeyBits
	}
	if origin == "" {
		origin = "imported"
		if req.Wrapped {
			origin = "imported-wrapped"
		}
	}
	return &PSK{
		Identity:   append([]byte{}, req.Identity...),
		Hash:       req.Hash,
		KeyBits:    bits,
		ClientNode: req.ClientNode,
		ServerNode: req.ServerNode,
		Targets:    req.Targets,
		Created:    v.now().UTC().Truncate(time.Second),
		NotAfter:   req.NotAfter.UTC(),
		State:      StateActive,
		Origin:     origin,
		Backend:    v.backend.Info().Name,
		Handle:     handle,
		Policy:     pol,
	}, nil
}

// keyLabel is the non-secret name a backend may give the key.
func keyLabel(identity []byte) string {
	sum := sha256.Sum256(identity)
	return fmt.Sprintf("pskvault-%x", sum[:8])
}

// Create generates a 256-bit EPSK (OS RNG, mixed with the backend's hardware
// RNG when it has one), stores it, and returns it for the peer. The caller
// must deliver and then zero the returned key.
func (v *Vault) Create(ctx context.Context, req ImportRequest) (*PSK, []byte, error) {
	key, err := v.generateKey(ctx)
	if err != nil {
		return nil, nil, err
	}
	req.Key, req.Wrapped, req.origin = key, false, "generated"
	if _, ok := v.backend.(RandomSource); ok {
		req.origin = "generated (OS RNG mixed with " + v.backend.Info().Name + " RNG)"
	}
	p, err := v.Import(ctx, req)
	if err != nil {
		clear(key)
		return nil, nil, err
	}
	return p, key, nil
}

func (v *Vault) generateKey(ctx context.Context) ([]byte, error) {
	key := make([]byte, GeneratedKeyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("OS RNG: %w", err)
	}
	rs, ok := v.backend.(RandomSource)
	if !ok {
		return key, nil
	}
	hw, err := v.guard.read(ctx, OpRandom, func(ctx context.Context) ([]byte, error) { return rs.Random(ctx, GeneratedKeyLen) })
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("hardware RNG: %w", err)
	}
	// SHA-256(os || hw): as strong as the better of the two sources.
	h := sha256.New()
	h.Write(key)
	h.Write(hw)
	clear(key)
	clear(hw)
	return h.Sum(key[:0]), nil
}

func (v *Vault) put(p *PSK, mustBeNew bool) error {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	old, err := v.get(p.Identity)
	switch {
	case errors.Is(err, ErrNotFound):
		old = nil
	case err != nil:
		return err
	}
	if old != nil && mustBeNew {
		return fmt.Errorf("%w: %x", ErrExists, p.Identity)
	}
	// The record now names the key: the intent to create it is done
	// (reconcile.go), in the same transaction.
	handle := p.Handle
	if err := v.store(p.Identity, old, p, func(tx *bolt.Tx) error { return dropIntent(tx, handle) }); err != nil {
		return fmt.Errorf("write PSK record: %w", err)
	}
	return nil
}

// replace writes next over the record prev, which the caller read from the
// index, provided the record is still prev: a lifecycle operation that
// waited on the backend must not write back a stale copy over a revoke,
// delete, rotate or finalize that ran meanwhile (which would bring a
// destroyed key back). It returns the record's current state otherwise.
func (v *Vault) replace(prev, next *PSK) error {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	cur, err := v.get(prev.Identity)
	switch {
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("%w: it was deleted meanwhile", ErrNotFound)
	case err != nil:
		return err
	case cur.State == StateRevoked && prev.State != StateRevoked:
		return fmt.Errorf("%w meanwhile at %s: %s", ErrRevoked, cur.RevokedAt.Format(time.RFC3339), cur.RevokeReason)
	case prev.disk == nil || !bytes.Equal(cur.disk, prev.disk):
		return fmt.Errorf("%w: PSK %x was changed by another operation meanwhile; try again", ErrInvalid, prev.Identity)
	}
	if err := v.store(next.Identity, cur, next, nil); err != nil {
		return fmt.Errorf("write PSK record: %w", err)
	}
	return nil
}

// recordKey is the bbolt key of a PSK record: the identity itself when it
// is shorter than bbolt's 32768-byte key limit, else its first 32736 bytes
// and its SHA-256 (32768 bytes in all, a length no identity stored as
// itself has). Records are read back by the identity inside them, so the
// key only has to be unique.
func recordKey(identity []byte) []byte {
	if len(identity) < bolt.MaxKeySize {
		return identity
	}
	sum := sha256.Sum256(identity)
	return append(bytes.Clone(identity[:bolt.MaxKeySize-len(sum)]), sum[:]...)
}

// Get returns the PSK with this identity.
func (v *Vault) Get(identity []byte) (*PSK, error) {
	return v.get(identity)
}

// Count is the number of PSK records, in O(1) (the counts in vault.db).
func (v *Vault) Count() int {
	n := 0
	v.db.View(func(tx *bolt.Tx) error {
		c := readCounts(tx)
		n = int(c.active + c.revoked)
		return nil
	})
	return n
}

// CountDerivable counts the PSKs c may derive (MayDerive): O(1) for a
// trusted or in-process caller (who may derive them all), one pass over
// the records otherwise.
func (v *Vault) CountDerivable(c *Caller) (int, error) {
	if c == nil || v.Access().IsTrusted(c) {
		return v.Count(), nil
	}
	n := 0
	err := v.each(false, func(p *PSK) bool {
		if v.mayDerive(c, p, "") {
			n++
		}
		return true
	})
	return n, err
}

// List returns all PSKs, ordered by identity. It holds them all in
// memory: for a vault of any size use ListPage or Each.
func (v *Vault) List() ([]*PSK, error) {
	var out []*PSK
	err := v.each(true, func(p *PSK) bool {
		out = append(out, p)
		return true
	})
	return out, err
}

// Each calls fn with every PSK in identity order until fn returns false,
// reading a page at a time, never holding a transaction while fn runs.
// The records come without their secrets (no Handle, no finalized boxes).
func (v *Vault) Each(fn func(*PSK) bool) error { return v.each(false, fn) }

// Delete destroys the PSK's key in the backend and removes its record.
// The record's key slot is zeroed first (keyslots.go), so the copies of
// the record bbolt leaves in freed pages can no longer be opened.
func (v *Vault) Delete(ctx context.Context, identity []byte) error {
	return v.deleteRecord(ctx, identity)
}

func (v *Vault) deleteRecord(ctx context.Context, identity []byte) error {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	p, err := v.get(identity)
	if err != nil {
		return err
	}
	// A revoked, swept or finalized PSK has no main key left (its handle
	// is gone from the record); the hardware backends refuse an empty
	// handle, so asking them would make such a PSK impossible to delete.
	if len(p.Handle) > 0 && !v.keysOutside() {
		// The key is in the handle (soft, TPM): zeroing the record's key
		// slot destroys it, before the record is removed (store), so no
		// mark is needed. The backend then forgets any loaded copy (TPM).
		if err := v.store(identity, p, nil, nil); err != nil {
			return fmt.Errorf("delete PSK record: %w", err)
		}
		v.forgetKey(ctx, p)
		return nil
	}
	if len(p.Handle) > 0 {
		// The intent first: marked, the record refuses derivation and
		// survives a crash or a failed destroy, and the delete is finished
		// by the next psk delete or the next start (reconcile.go), never
		// left as an active record whose key is gone.
		if p.DeletePending.IsZero() {
			n := p.clone()
			n.DeletePending = v.now().UTC().Truncate(time.Second)
			if err := v.store(identity, p, n, nil); err != nil {
				return fmt.Errorf("mark PSK for deletion: %w", err)
			}
			p = n
		}
		if err := v.guard.change(ctx, OpDelete, func() error { return v.backend.DeleteKey(ctx, KeyRef{Handle: p.Handle, Hash: p.Hash}) }); err != nil {
			return fmt.Errorf("PSK marked for deletion (derivation refused; psk delete or the next start retries), but destroying its key in the %s backend failed: %w", p.Backend, err)
		}
	}
	if err := v.store(identity, p, nil, nil); err != nil {
		return fmt.Errorf("delete PSK record: %w", err)
	}
	return nil
}

// keysOutside reports whether destroying a key is a backend operation
// that must be ordered with the record's change (reconcile.go): false for
// a backend whose handle is the key (KeyInHandle: soft, TPM), where
// zeroing the record's key slot destroys it.
func (v *Vault) keysOutside() bool {
	kh, ok := v.backend.(KeyInHandle)
	return !ok || !kh.KeyInHandle()
}

// forgetKey has an in-handle backend drop what it holds of p's key (the
// TPM's loaded copy) once the record's key slot is zeroed. Its failure
// changes nothing that lasts: the handle exists nowhere any more.
func (v *Vault) forgetKey(ctx context.Context, p *PSK) {
	v.guard.change(ctx, OpDelete, func() error { return v.backend.DeleteKey(ctx, KeyRef{Handle: p.Handle, Hash: p.Hash}) })
}

// DeriveRequest asks for the imported PSK of one identity, context and target.
type DeriveRequest struct {
	Identity []byte // external identity
	Context  []byte // RFC 9258 context, sent in clear
	Target   Target
	// Peer and Role (this node's role, "client" or "server") are required
	// for group PSKs and checked when given for pairwise ones (policy.go).
	Peer, Role string
	// Caller is the local process asking, checked against the access
	// lists; nil means an in-process caller, which is trusted.
	Caller *Caller
}

// Derived is an imported PSK. IPSKX is secret: the caller zeroes it after use.
type Derived struct {
	PSK              *PSK
	ImportedIdentity []byte // PskIdentity.identity on the wire
	IPSKX            []byte
	Role             string // this node's role: "client" or "server"
	Context          []byte // the RFC 9258 context used (node context filled in)
}

// Derive computes ipskx for the request after checking policy: the PSK exists
// and is active, unexpired, allows the target, and this node is party to it.
func (v *Vault) Derive(ctx context.Context, req DeriveRequest) (*Derived, error) {
	// The record and the live records sharing its key (for the key-reuse
	// MUST below), from one snapshot.
	var p *PSK
	var same [][]byte
	err := v.db.View(func(tx *bolt.Tx) error {
		var err error
		if p, err = v.readTx(tx, req.Identity); err != nil || !holdsKey(p) {
			return err
		}
		same, err = liveWithKey(tx, p)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Who asks comes first, so a caller without rights learns nothing about
	// the PSK, not even that it exists.
	if !v.mayDerive(req.Caller, p, req.Role) {
		return nil, Denied
	}
	if !p.Party(v.cfg.NodeID) {
		return nil, fmt.Errorf("%w: PSK is between %s and %s, this vault is node %s", ErrNotParty, p.ClientNode, p.ServerNode, v.cfg.NodeID)
	}
	if p.State != StateActive {
		return nil, ErrRevoked
	}
	if err := deletePending(p); err != nil {
		return nil, err
	}
	if p.Expired(v.now()) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, p.NotAfter.Format(time.RFC3339))
	}
	// Whatever `check` calls a MUST violation is not served (check.go).
	if err := v.refuseViolation(p, same); err != nil {
		return nil, err
	}
	if !p.Allows(req.Target) {
		return nil, fmt.Errorf("%w: %s (allowed: %v)", ErrTargetNotAllowed, req.Target, p.Targets)
	}
	idCtx, role, err := v.deriveContext(p, req)
	if err != nil {
		return nil, err
	}
	if !v.allows(req.Caller, p, role) {
		return nil, Denied
	}
	plan, err := importer.NewPlan(p.Hash, importer.Identity{External: p.Identity, Context: idCtx, Protocol: req.Target.Protocol, KDF: req.Target.KDF})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if p.IsFinalized() {
		return v.deriveFinalized(ctx, p, req.Target, plan.ImportedIdentity(), role)
	}
	if !p.IsFinalized() && len(p.Handle) == 0 {
		// Its key slot no longer opened its sealed handle (keyslots.go).
		return nil, fmt.Errorf("%w: the record's key material was destroyed", ErrKeyNotFound)
	}
	key := KeyRef{Handle: p.Handle, Hash: p.Hash}
	ipskx, err := plan.Expand(func(data []byte) ([]byte, error) { return v.hmac(ctx, key, data) })
	if err != nil {
		return nil, fmt.Errorf("derive in %s backend: %w", p.Backend, err)
	}
	return &Derived{PSK: p, ImportedIdentity: plan.ImportedIdentity(), IPSKX: ipskx, Role: role, Context: idCtx}, nil
}
