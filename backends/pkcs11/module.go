//go:build cgo

package pkcs11

import (
	"errors"
	"fmt"
	"os"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/pskvault/pskvault/vault"
)

// A PKCS#11 library is process-global: C_Initialize and C_Finalize act on
// the whole library, and login state is per application, not per session.
// So every backend (and Probe) opened on one module path shares one loaded
// and initialized library, finalized when the last user lets go. The
// library is never unloaded (dlclose of some modules, SoftHSM among them,
// is not safe).
type module struct {
	path string
	ctx  *p11.Ctx
	refs int
	ids  idReader // batched CKA_ID reads (readids.go)
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*module{}
)

func acquireModule(path string) (*module, error) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	m := modules[path]
	if m == nil {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%w: PKCS#11 module %s: %v", vault.ErrBackendUnavailable, path, errors.Unwrap(err))
		}
		ctx := p11.New(path)
		if ctx == nil {
			return nil, fmt.Errorf("%w: PKCS#11 module %s could not be loaded (dlopen failed: wrong architecture or missing dependency?)", vault.ErrBackendUnavailable, path)
		}
		m = &module{path: path, ctx: ctx}
		m.ids.init(path)
		modules[path] = m
	}
	if m.refs == 0 {
		err := m.ctx.Initialize()
		if err != nil && !isRV(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			return nil, fmt.Errorf("%w: C_Initialize of %s: %v", vault.ErrBackendUnavailable, path, err)
		}
	}
	m.refs++
	return m, nil
}

// reinit finalizes and initializes the module again, which makes it scan
// for tokens afresh (SoftHSM2, for one, finds a token whose directory
// came back only this way). C_Finalize while another user of the module is
// inside a call is undefined behaviour, so this is done only for the
// module's one user (the daemon's one backend); it reports whether it ran.
// The caller holds its backend's lock exclusively and has closed its
// sessions.
func (m *module) reinit() (bool, error) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m.refs != 1 {
		return false, nil
	}
	m.ctx.Finalize()
	err := m.ctx.Initialize()
	if err != nil && !isRV(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return true, fmt.Errorf("%w: C_Initialize of %s: %v", vault.ErrBackendUnavailable, m.path, err)
	}
	return true, nil
}

func (m *module) release() {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	m.refs--
	if m.refs == 0 {
		m.ctx.Finalize()
	}
}

// isRV reports whether err is the PKCS#11 return value rv.
func isRV(err error, rv uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == rv
}

// rvOf returns err's PKCS#11 return value, or 0 (CKR_OK) when it has none.
func rvOf(err error) uint {
	var e p11.Error
	if errors.As(err, &e) {
		return uint(e)
	}
	return 0
}

// recoverable are the return values after which a fresh login and fresh
// sessions may succeed: the pool is rebuilt and the operation retried once.
func recoverable(err error) bool {
	if errors.Is(err, errTokenLost) {
		return true
	}
	switch rvOf(err) {
	case p11.CKR_USER_NOT_LOGGED_IN, p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED,
		p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_SLOT_ID_INVALID:
		return true
	}
	return false
}

// errTokenLost reports a token that no longer answers as the one this
// backend opened (gone, re-initialized, or its store moved away). Objects
// not found on such a token are not "gone": see Backend.confirmPresent.
var errTokenLost = errors.New("PKCS#11 token lost")

// classify wraps a token error in the vault sentinel it stands for.
func classify(what string, err error) error {
	if err == nil {
		return nil
	}
	var sentinel error
	switch rvOf(err) {
	case p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_DEVICE_ERROR, p11.CKR_DEVICE_MEMORY,
		p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_USER_NOT_LOGGED_IN,
		p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_SESSION_COUNT, p11.CKR_TOKEN_NOT_RECOGNIZED:
		sentinel = vault.ErrBackendUnavailable
	case p11.CKR_KEY_HANDLE_INVALID, p11.CKR_OBJECT_HANDLE_INVALID:
		sentinel = vault.ErrKeyNotFound
	case p11.CKR_MECHANISM_INVALID, p11.CKR_MECHANISM_PARAM_INVALID, p11.CKR_KEY_SIZE_RANGE,
		p11.CKR_FUNCTION_NOT_SUPPORTED, p11.CKR_KEY_TYPE_INCONSISTENT, p11.CKR_KEY_FUNCTION_NOT_PERMITTED,
		p11.CKR_TEMPLATE_INCONSISTENT, p11.CKR_ATTRIBUTE_VALUE_INVALID:
		sentinel = vault.ErrUnsupported
	}
	if sentinel == nil {
		return fmt.Errorf("PKCS#11 %s: %w", what, err)
	}
	return fmt.Errorf("%w: PKCS#11 %s: %w", sentinel, what, err)
}
