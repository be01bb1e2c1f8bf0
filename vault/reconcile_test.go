package vault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// invStore is the "device" of the invtest backend: keys by handle, kept
// across opens of the same state directory like a token's objects.
type invStore struct {
	mu        sync.Mutex
	keys      map[string][]byte // handle -> PRK
	down      bool              // every call fails as unreachable
	failStore bool              // StoreKey creates the key, then fails (a crash before the record)
	failDel   bool              // DeleteKey destroys the key, then fails (a crash before the record is removed)
}

var (
	invMu     sync.Mutex
	invStores = map[string]*invStore{}
)

// invBackend keeps keys apart from the records, like a PKCS#11 token, and
// implements vault.KeyInventory: the vault's reconciliation is tested on it
// without a token (the SoftHSM2 tests are in cmd/pskvault).
type invBackend struct {
	s   *invStore
	tag []byte
}

func init() {
	vault.RegisterBackend("invtest", func(ctx context.Context, cfg vault.BackendConfig) (vault.Backend, error) {
		invMu.Lock()
		defer invMu.Unlock()
		s := invStores[cfg.StateDir]
		if s == nil {
			s = &invStore{keys: map[string][]byte{}}
			invStores[cfg.StateDir] = s
		}
		return &invBackend{s: s, tag: bytes.Clone(cfg.VaultID[:8])}, nil
	})
}

var errInvDown = fmt.Errorf("%w: invtest device away", vault.ErrBackendUnavailable)

func (b *invBackend) Info() vault.BackendInfo {
	return vault.BackendInfo{Name: "invtest", Hashes: []importer.Hash{importer.SHA256, importer.SHA384}, HashNames: []string{"sha256", "sha384"}}
}

func (b *invBackend) StoreKey(ctx context.Context, req vault.StoreRequest) ([]byte, error) {
	h := append(bytes.Clone(b.tag), make([]byte, 8)...)
	rand.Read(h[8:])
	if err := vault.NoteNewKey(ctx, h); err != nil {
		return nil, err
	}
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if b.s.down {
		return nil, errInvDown
	}
	b.s.keys[string(h)] = bytes.Clone(req.PRK)
	if b.s.failStore {
		return nil, errors.New("invtest: crashed after creating the key")
	}
	return h, nil
}

func (b *invBackend) HMAC(ctx context.Context, key vault.KeyRef, data []byte) ([]byte, error) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if b.s.down {
		return nil, errInvDown
	}
	prk, ok := b.s.keys[string(key.Handle)]
	if !ok {
		return nil, vault.ErrKeyNotFound
	}
	return importer.SoftwareMAC(key.Hash, prk)(data)
}

func (b *invBackend) DeleteKey(ctx context.Context, key vault.KeyRef) error {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if b.s.down {
		return errInvDown
	}
	delete(b.s.keys, string(key.Handle))
	if b.s.failDel {
		return errors.New("invtest: crashed after destroying the key")
	}
	return nil
}

func (b *invBackend) Keys(ctx context.Context) ([][]byte, error) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if b.s.down {
		return nil, errInvDown
	}
	var out [][]byte
	for h := range b.s.keys {
		if bytes.HasPrefix([]byte(h), b.tag) {
			out = append(out, []byte(h))
		}
	}
	return out, nil
}

func (b *invBackend) Close() error { return nil }

func (s *invStore) set(f func(*invStore)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *invStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}

// TestReconcile: an interrupted create, an interrupted delete, a key
// destroyed behind the vault's back, a key no record names, and a device
// that is away at start, each as the next Open must handle it.
func TestReconcile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	ctx := context.Background()
	if err := vault.Init(ctx, dir, vault.Config{NodeID: "node-a", Backend: "invtest"}); err != nil {
		t.Fatal(err)
	}
	open := func() *vault.Vault {
		t.Helper()
		v, err := vault.Open(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	invMu.Lock()
	s := invStores[dir]
	invMu.Unlock()
	imp := func(v *vault.Vault, id string) error {
		key := make([]byte, 32)
		rand.Read(key)
		_, err := v.Import(ctx, vault.ImportRequest{Identity: []byte(id), Key: key, Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"})
		return err
	}
	derive := func(v *vault.Vault, id string) error {
		_, err := v.Derive(ctx, vault.DeriveRequest{Identity: []byte(id), Target: vault.Target{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}})
		return err
	}

	v := open()
	for _, id := range []string{"a", "b", "c"} {
		if err := imp(v, id); err != nil {
			t.Fatal(err)
		}
	}
	base := s.count() // three keys and the auxiliary key
	if base != 4 {
		t.Fatalf("%d keys after three imports, want 4", base)
	}

	// A create that dies after the key exists and before the record.
	s.set(func(s *invStore) { s.failStore = true })
	if err := imp(v, "lost-create"); err == nil {
		t.Fatal("import succeeded although the backend failed")
	}
	s.set(func(s *invStore) { s.failStore = false })
	// A delete that dies after the key is destroyed and before the record
	// goes: the record stays, marked, and refuses derivation.
	s.set(func(s *invStore) { s.failDel = true })
	if err := v.Delete(ctx, []byte("b")); err == nil {
		t.Fatal("delete succeeded although the backend failed")
	}
	s.set(func(s *invStore) { s.failDel = false })
	if p, err := v.Get([]byte("b")); err != nil || p.DeletePending.IsZero() {
		t.Fatalf("record of the interrupted delete: %+v, %v; want it kept and marked", p, err)
	}
	if err := derive(v, "b"); !errors.Is(err, vault.ErrRevoked) {
		t.Fatalf("derive of a PSK being deleted: %v, want ErrRevoked", err)
	}
	if s.count() != base { // one key made, one destroyed
		t.Fatalf("%d keys, want %d", s.count(), base)
	}
	v.Close()

	v = open()
	r := v.Reconciliation()
	if r.CreatesUndone != 1 || r.DeletesFinished != 1 || len(r.Orphans) != 0 || len(r.Problems) != 0 || len(r.KeysMissing) != 0 {
		t.Fatalf("reconciliation: %+v, want one create undone and one delete finished", r)
	}
	if _, err := v.Get([]byte("b")); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("record of the interrupted delete after restart: %v, want it gone", err)
	}
	if s.count() != base-1 {
		t.Fatalf("%d keys after restart, want %d (two records and the auxiliary key)", s.count(), base-1)
	}
	if rep := checkAll(t, v); rep.Errors != 0 {
		t.Fatalf("check after the reconciliation: %d errors", rep.Errors)
	}
	v.Close()

	// A key destroyed behind the vault's back, and a key with the vault's
	// tag no record names.
	pa, _ := func() (*vault.PSK, error) { v := open(); defer v.Close(); return v.Get([]byte("a")) }()
	var stolen []byte
	var orphan string
	s.set(func(s *invStore) {
		stolen = s.keys[string(pa.Handle)]
		delete(s.keys, string(pa.Handle))
		h := string(pa.Handle[:8]) + "orphan!!"
		s.keys[h] = make([]byte, 32)
		orphan = fmt.Sprintf("%x", h)
	})
	v = open()
	r = v.Reconciliation()
	if len(r.KeysMissing) != 1 || r.KeysMissing[0] != fmt.Sprintf("%x", "a") || len(r.Orphans) != 1 || r.Orphans[0] != orphan {
		t.Fatalf("reconciliation: %+v, want a's key missing and one orphan", r)
	}
	if p, _ := v.Get([]byte("a")); p.KeyMissing.IsZero() {
		t.Fatal("record whose key is gone is not marked")
	}
	rep := checkAll(t, v)
	if rep.Errors != 2 { // the key-missing finding and the orphan
		t.Fatalf("check: %d errors, want 2", rep.Errors)
	}
	if err := derive(v, "a"); !errors.Is(err, vault.ErrKeyNotFound) {
		t.Fatalf("derive of a PSK whose key is gone: %v, want ErrKeyNotFound", err)
	}
	if err := derive(v, "c"); err != nil {
		t.Fatal(err)
	}
	if s.count() != base-1 { // the orphan is reported, not destroyed
		t.Fatalf("%d keys, want %d", s.count(), base-1)
	}
	v.Close()

	// The device away at start: nothing is marked or destroyed on its
	// account, and the problem is reported.
	s.set(func(s *invStore) { s.keys[string(pa.Handle)] = stolen; s.down = true })
	v = open()
	r = v.Reconciliation()
	if len(r.Problems) == 0 || len(r.KeysMissing) != 0 {
		t.Fatalf("reconciliation with the device away: %+v", r)
	}
	if p, _ := v.Get([]byte("a")); p.KeyMissing.IsZero() {
		t.Fatal("the mark was cleared although the device could not be asked")
	}
	v.Close()
	// Back, with a's key restored: the mark goes.
	s.set(func(s *invStore) { s.down = false })
	v = open()
	defer v.Close()
	if p, _ := v.Get([]byte("a")); !p.KeyMissing.IsZero() {
		t.Fatal("the key is back but the record is still marked missing")
	}
	if err := derive(v, "a"); err != nil {
		t.Fatal(err)
	}
}
