package vault_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pskvault/pskvault/backends/soft"
	"github.com/pskvault/pskvault/internal/swtpmsim"
	"github.com/pskvault/pskvault/vault"
)

// hookBackend is the soft backend with hooks, registered as "hooktest":
// like the hardware backends it refuses a handle it did not make (an empty
// one included), and tests can make DeleteKey fail or run code in the middle
// of StoreKey and HMAC, where lifecycle operations wait on the backend.
type hookBackend struct {
	vault.Backend
	mu      sync.Mutex
	failDel error    // DeleteKey fails with this while set
	deleted [][]byte // handles DeleteKey was asked to destroy
	onStore func()   // run once, in the middle of the next StoreKey
	onHMAC  func()   // run once, in the middle of the next HMAC
}

var (
	hookMu   sync.Mutex
	lastHook *hookBackend
)

func init() {
	vault.RegisterBackend("hooktest", func(ctx context.Context, cfg vault.BackendConfig) (vault.Backend, error) {
		b, err := soft.Open(ctx, vault.BackendConfig{URI: "soft", StateDir: cfg.StateDir, Init: cfg.Init})
		if err != nil {
			return nil, err
		}
		h := &hookBackend{Backend: b}
		hookMu.Lock()
		lastHook = h
		hookMu.Unlock()
		return h, nil
	})
}

func (h *hookBackend) take(f *func()) func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := *f
	*f = nil
	return g
}

func (h *hookBackend) StoreKey(ctx context.Context, req vault.StoreRequest) ([]byte, error) {
	if f := h.take(&h.onStore); f != nil {
		f()
	}
	return h.Backend.StoreKey(ctx, req)
}

func (h *hookBackend) HMAC(ctx context.Context, key vault.KeyRef, data []byte) ([]byte, error) {
	if f := h.take(&h.onHMAC); f != nil {
		f()
	}
	return h.Backend.HMAC(ctx, key, data)
}

func (h *hookBackend) DeleteKey(ctx context.Context, key vault.KeyRef) error {
	if len(key.Handle) == 0 {
		return vault.ErrKeyNotFound // as the TPM and PKCS#11 backends do
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failDel != nil {
		return h.failDel
	}
	h.deleted = append(h.deleted, bytes.Clone(key.Handle))
	return nil
}

func (h *hookBackend) wasDeleted(handle []byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.deleted {
		if bytes.Equal(d, handle) {
			return true
		}
	}
	return false
}

func openHook(t *testing.T) (*vault.Vault, *hookBackend) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "v")
	if err := vault.Init(bg, dir, vault.Config{NodeID: "node-a", Backend: "hooktest"}); err != nil {
		t.Fatal(err)
	}
	v, _, _ := reopen(t, dir)
	hookMu.Lock()
	defer hookMu.Unlock()
	return v, lastHook
}

// A PSK whose key is already destroyed (revoked, swept, finalized) can be
// deleted on a backend that refuses an empty handle: on the TPM and PKCS#11
// backends `psk delete` of such a PSK used to fail for good.
func testDeleteAfterDestruction(t *testing.T, open func(t *testing.T) *vault.Vault) {
	for _, how := range []string{"revoke", "finalize", "sweep", "revoke-finalized"} {
		t.Run(how, func(t *testing.T) {
			v := open(t)
			r := pairReq("doomed", randKey(t, 32))
			r.NotAfter = time.Now().Add(time.Hour)
			if _, err := v.Import(bg, r); err != nil {
				t.Fatal(err)
			}
			var err error
			switch how {
			case "revoke":
				_, err = v.Revoke(bg, r.Identity, "test")
			case "finalize":
				_, err = v.Finalize(bg, r.Identity, vault.FinalizeRequest{})
			case "sweep":
				later := time.Now().Add(2 * time.Hour)
				vault.SetNow(v, func() time.Time { return later })
				_, err = v.Sweep(bg)
				vault.SetNow(v, time.Now)
			case "revoke-finalized":
				if _, err = v.Finalize(bg, r.Identity, vault.FinalizeRequest{}); err == nil {
					_, err = v.Revoke(bg, r.Identity, "test")
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Delete(bg, r.Identity); err != nil {
				t.Fatalf("delete after %s: %v", how, err)
			}
			if _, err := v.Get(r.Identity); !errors.Is(err, vault.ErrNotFound) {
				t.Fatalf("record still there after delete: %v", err)
			}
		})
	}
}

func TestDeleteAfterDestructionHook(t *testing.T) {
	testDeleteAfterDestruction(t, func(t *testing.T) *vault.Vault { v, _ := openHook(t); return v })
}

func TestDeleteAfterDestructionTPM(t *testing.T) {
	sim := swtpmsim.Start(t)
	testDeleteAfterDestruction(t, func(t *testing.T) *vault.Vault { v, _, _ := openAt(t, sim.URI()); return v })
}

// When the backend fails to destroy the main key at finalize or revoke, the
// record keeps its handle: `check` reports the leftover key and `psk
// delete` destroys it later. Dropping the handle instead left a token
// object nobody could name any more.
func TestDestroyFailureKeepsHandle(t *testing.T) {
	for _, how := range []string{"finalize", "revoke"} {
		t.Run(how, func(t *testing.T) {
			v, hb := openHook(t)
			r := pairReq("k", randKey(t, 32))
			if _, err := v.Import(bg, r); err != nil {
				t.Fatal(err)
			}
			h := handleOf(t, v, r.Identity)
			want := derive(t, v, vault.DeriveRequest{Identity: r.Identity, Target: tls256}).IPSKX
			boom := errors.New("token unplugged")
			hb.mu.Lock()
			hb.failDel = boom
			hb.mu.Unlock()
			var err error
			if how == "finalize" {
				_, err = v.Finalize(bg, r.Identity, vault.FinalizeRequest{})
			} else {
				_, err = v.Revoke(bg, r.Identity, "test")
			}
			if !errors.Is(err, boom) {
				t.Fatalf("%s with a failing DeleteKey: %v", how, err)
			}
			p, err := v.Get(r.Identity)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p.Handle, h) {
				t.Fatalf("%s lost the handle of the key it failed to destroy", how)
			}
			if how == "finalize" {
				if !p.IsFinalized() {
					t.Fatal("not finalized")
				}
				if d := derive(t, v, vault.DeriveRequest{Identity: r.Identity, Target: tls256}); !bytes.Equal(d.IPSKX, want) {
					t.Fatal("finalized PSK derives a different key")
				}
				found := false
				for _, a := range checkAll(t, v).PSKs {
					for _, f := range a.Findings {
						found = found || f.Rule == "main-key" && bytes.Contains([]byte(f.Message), []byte("handle is still recorded"))
					}
				}
				if !found {
					t.Fatal("check does not report the main key left behind")
				}
			} else {
				if _, err := v.Derive(bg, vault.DeriveRequest{Identity: r.Identity, Target: tls256}); !errors.Is(err, vault.ErrRevoked) {
					t.Fatalf("revoked PSK derives: %v", err)
				}
				found := false
				for _, a := range checkAll(t, v).PSKs {
					for _, f := range a.Findings {
						found = found || f.Rule == "main-key" && bytes.Contains([]byte(f.Message), []byte("handle is still recorded"))
					}
				}
				if !found {
					t.Fatal("check does not report the key left behind by the revocation")
				}
			}
			hb.mu.Lock()
			hb.failDel = nil
			hb.mu.Unlock()
			if err := v.Delete(bg, r.Identity); err != nil {
				t.Fatal(err)
			}
			if !hb.wasDeleted(h) {
				t.Fatal("delete did not destroy the leftover key")
			}
		})
	}
}

// A lifecycle operation that waits on the backend must not write back a
// stale copy of the record over a revoke or delete that ran meanwhile: that
// silently undid the revocation and, where the handle is the key (soft,
// TPM), brought a destroyed key back.
func TestLifecycleDoesNotUndoConcurrentDestruction(t *testing.T) {
	type op struct {
		name string
		run  func(v *vault.Vault, id []byte) error
		hook func(hb *hookBackend, f func())
	}
	ops := []op{
		{"finalize", func(v *vault.Vault, id []byte) error {
			_, err := v.Finalize(bg, id, vault.FinalizeRequest{})
			return err
		}, func(hb *hookBackend, f func()) { hb.mu.Lock(); hb.onHMAC = f; hb.mu.Unlock() }},
		{"rotate", func(v *vault.Vault, id []byte) error {
			_, key, err := v.Rotate(bg, id, vault.RotateRequest{NewIdentity: append(bytes.Clone(id), ".g2"...), Overlap: time.Hour})
			clear(key)
			return err
		}, func(hb *hookBackend, f func()) { hb.mu.Lock(); hb.onStore = f; hb.mu.Unlock() }},
	}
	for _, o := range ops {
		for _, destroy := range []string{"revoke", "delete"} {
			t.Run(o.name+"/"+destroy, func(t *testing.T) {
				v, hb := openHook(t)
				r := pairReq("victim", randKey(t, 32))
				if _, err := v.Import(bg, r); err != nil {
					t.Fatal(err)
				}
				var derr error
				o.hook(hb, func() {
					if destroy == "revoke" {
						_, derr = v.Revoke(bg, r.Identity, "compromised")
					} else {
						derr = v.Delete(bg, r.Identity)
					}
				})
				err := o.run(v, r.Identity)
				if derr != nil {
					t.Fatalf("%s during %s: %v", destroy, o.name, derr)
				}
				if err == nil {
					t.Fatalf("%s succeeded although the PSK was destroyed meanwhile", o.name)
				}
				p, gerr := v.Get(r.Identity)
				switch destroy {
				case "revoke":
					if gerr != nil || p.State != vault.StateRevoked || len(p.Handle) != 0 || len(p.Finalized) != 0 {
						t.Fatalf("revocation undone by %s: err %v", o.name, gerr)
					}
				case "delete":
					if !errors.Is(gerr, vault.ErrNotFound) {
						t.Fatalf("deleted PSK brought back by %s", o.name)
					}
				}
				if _, err := v.Derive(bg, vault.DeriveRequest{Identity: r.Identity, Target: tls256}); err == nil {
					t.Fatalf("destroyed PSK derives again after %s", o.name)
				}
				if o.name == "rotate" {
					if _, err := v.Get([]byte("victim.g2")); !errors.Is(err, vault.ErrNotFound) {
						t.Fatalf("rotation of a destroyed PSK left its new generation behind: %v", err)
					}
				}
			})
		}
	}
}
