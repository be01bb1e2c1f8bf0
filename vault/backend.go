package vault

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/pskvault/pskvault/importer"
)

// Backend holds PRKs (epskx values) and computes HMAC under them. It is the
// whole contract a key store must meet: the importer needs nothing else.
//
// A Backend must be safe for concurrent use. It never returns key bytes, never
// logs them, and never puts them in an error. It knows nothing of sockets,
// callers or policy: the vault decides whether a request may run at all.
type Backend interface {
	// Info describes the backend and what it can do.
	Info() BackendInfo
	// StoreKey stores req.PRK as an HMAC key for req.Hash and returns an
	// opaque handle that the vault records. The backend must not retain
	// req.PRK; the caller zeroes it after the call.
	StoreKey(ctx context.Context, req StoreRequest) (handle []byte, err error)
	// HMAC returns HMAC(key, data) with key.Hash: exactly key.Hash.Size() bytes.
	HMAC(ctx context.Context, key KeyRef, data []byte) ([]byte, error)
	// DeleteKey destroys the key. Deleting a key that is already gone is
	// not an error; a backend that cannot tell whether the key is gone
	// (device unreachable) fails with ErrBackendUnavailable, never
	// success. Likewise HMAC returns ErrKeyNotFound only when the device
	// answered and the key is not there.
	DeleteKey(ctx context.Context, key KeyRef) error
	// Close releases the backend (and, for a TPM, shuts it down cleanly).
	Close() error
}

// StoreRequest is a PRK to place in a backend.
type StoreRequest struct {
	PRK   []byte        // HashLen bytes; never retained by the backend
	Hash  importer.Hash // the EPSK's hash, which the HMAC key must use
	Label string        // a non-secret name for the key (token label, log hint)
	// Params carries backend-specific options the vault passes through
	// untouched (for example "pcrs" on the TPM backend). A backend must
	// refuse a parameter it does not know.
	Params map[string]string
}

// KeyRef names a stored key: the handle StoreKey returned and its hash.
type KeyRef struct {
	Handle []byte
	Hash   importer.Hash
}

// BackendInfo describes a backend.
type BackendInfo struct {
	Name        string          `json:"name"`                  // "soft", "tpm", "pkcs11"
	Description string          `json:"description,omitempty"` // device, token or file in use (admin socket only)
	Hardware    bool            `json:"hardware"`              // keys are held by hardware
	Hashes      []importer.Hash `json:"-"`                     // supported EPSK hashes
	HashNames   []string        `json:"hashes"`
}

// Supports reports whether the backend can hold keys for h.
func (i BackendInfo) Supports(h importer.Hash) bool {
	for _, x := range i.Hashes {
		if x == h {
			return true
		}
	}
	return false
}

// RandomSource is an optional Backend ability: random bytes from a hardware
// RNG, which the vault mixes into the OS RNG when it generates keys.
type RandomSource interface {
	Random(ctx context.Context, n int) ([]byte, error)
}

// WrappedImporter is an optional Backend ability: import a PRK that arrives
// wrapped for this backend's hardware, so the host never sees it in clear.
type WrappedImporter interface {
	ImportWrapped(ctx context.Context, blob []byte, h importer.Hash, params map[string]string) (handle []byte, err error)
}

// KeyInHandle is an optional Backend trait: the handle StoreKey returns
// is the key itself, sealed or wrapped (soft: under the KEK file; TPM:
// under the storage parent), so once no live file holds the handle the
// key is gone, and DeleteKey only forgets what the backend caches. The
// vault then destroys such a key by zeroing the record's key slot alone
// (keyslots.go), in one change, without the delete-pending mark that a
// backend whose DeleteKey really destroys something needs.
type KeyInHandle interface {
	KeyInHandle() bool
}

// KeyInventory is an optional Backend ability, for backends that keep keys
// apart from the vault's records (a PKCS#11 token), where a crash between
// the two can leave a key no record names, or a record whose key is gone.
// The vault reconciles the two when it opens (reconcile.go).
type KeyInventory interface {
	// Keys returns the handle of every key the backend holds for this
	// vault (BackendConfig.VaultID), exactly as StoreKey or ImportWrapped
	// returned it. When the device cannot be read completely it fails,
	// wrapping ErrBackendUnavailable, rather than return a short list.
	Keys(ctx context.Context) ([][]byte, error)
}

type newKeyHook struct{}

// NoteNewKey is for backends with a KeyInventory: StoreKey and
// ImportWrapped call it with the handle of the key they are about to
// create, before creating it, and give up if it fails. Inside a vault
// operation it durably records the intent to create that key, so a crash
// before the vault has recorded the key leaves a key the vault knows is
// unfinished and destroys at its next start; elsewhere it does nothing.
func NoteNewKey(ctx context.Context, handle []byte) error {
	if f, ok := ctx.Value(newKeyHook{}).(func([]byte) error); ok {
		return f(handle)
	}
	return nil
}

// withNewKeyHook makes NoteNewKey call f in backend calls under ctx.
func withNewKeyHook(ctx context.Context, f func([]byte) error) context.Context {
	return context.WithValue(ctx, newKeyHook{}, f)
}

// Backend errors. Backends wrap these so the vault and the API can map them
// to stable answers; anything else is an internal error.
var (
	// ErrKeyNotFound: the handle names no key in the backend.
	ErrKeyNotFound = errors.New("key not found in backend")
	// ErrUnsupported: the backend cannot do what was asked (hash, parameter,
	// wrapped import).
	ErrUnsupported = errors.New("not supported by this backend")
	// ErrBackendUnavailable: the device, token or simulator cannot be reached.
	ErrBackendUnavailable = errors.New("backend unavailable")
	// ErrKeyPolicy: the hardware refused to use the key under its policy
	// (for example PCR values changed since the key was created).
	ErrKeyPolicy = errors.New("key use refused by hardware policy")
)

// BackendConfig is what opening a backend gets.
type BackendConfig struct {
	// URI selects and configures the backend: "soft", "tpm:device=/dev/tpmrm0",
	// "pkcs11:token=...?module-path=...". The part before the first ':' is
	// the scheme a backend registered under.
	URI string
	// StateDir is the vault's private directory (0700); a backend may keep
	// files in it, named after itself.
	StateDir string
	// Init is true when the vault is being created.
	Init bool
	// VaultID is random, made when the vault is created and stable for its
	// life (vaults made before it existed get one at their next open). A
	// backend that keeps keys outside the vault's database tags them with
	// it, so that its KeyInventory lists this vault's keys and no one
	// else's on a shared device.
	VaultID []byte
}

// Scheme returns the backend name in the URI.
func (c BackendConfig) Scheme() string {
	s, _, _ := strings.Cut(c.URI, ":")
	return s
}

// OpenFunc opens a backend.
type OpenFunc func(ctx context.Context, cfg BackendConfig) (Backend, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]OpenFunc{}
)

// RegisterBackend makes a backend available under scheme. Backends call it
// from init; registering a scheme twice panics.
func RegisterBackend(scheme string, open OpenFunc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[scheme]; dup {
		panic("vault: backend registered twice: " + scheme)
	}
	registry[scheme] = open
}

// Backends lists the registered backend schemes.
func Backends() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	var names []string
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ErrUnknownBackend reports a backend scheme nobody registered.
var ErrUnknownBackend = errors.New("unknown backend")

// OpenBackend opens the backend cfg.URI names.
func OpenBackend(ctx context.Context, cfg BackendConfig) (Backend, error) {
	registryMu.RLock()
	open := registry[cfg.Scheme()]
	registryMu.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("%w %q (this build has: %s)", ErrUnknownBackend, cfg.Scheme(), strings.Join(Backends(), ", "))
	}
	return open(ctx, cfg)
}
