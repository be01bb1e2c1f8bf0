//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	p11 "github.com/miekg/pkcs11"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

func init() {
	vault.RegisterBackend("pkcs11", func(ctx context.Context, cfg vault.BackendConfig) (vault.Backend, error) {
		return openTagged(ctx, cfg.URI, cfg.VaultID)
	})
}

// retryEvery is how often a backend whose token is away (or refused the
// PIN) tries to reach it again; requests in between fail at once with
// the last error, which wraps vault.ErrBackendUnavailable.
const retryEvery = 200 * time.Millisecond

// Backend keeps PRKs as non-extractable generic-secret objects on a PKCS#11
// token and computes HMAC with C_Sign on the token. It implements
// vault.Backend, vault.WrappedImporter, vault.RandomSource and
// vault.KeyInventory.
type Backend struct {
	uri *URI
	mod *module
	p   *p11.Ctx

	// mu is held shared for every token operation and exclusively while the
	// session pool is rebuilt (reset) or closed, so no operation ever runs
	// on a session handle that is being closed.
	mu       sync.RWMutex
	gen      uint64 // bumped by every reset
	slot     uint
	token    p11.TokenInfo
	hwSlot   bool
	closed   bool
	loginErr error // a refused PIN: not tried again (see login)
	// refusedPIN is HMAC(pinKey, PIN) of the PIN the token refused, so that
	// the same PIN is never presented twice while a changed PIN file is
	// tried once; nil for a typed PIN (pin-source=prompt), which is never
	// retried.
	refusedPIN []byte
	pinKey     [32]byte
	// down is why the token could not be reached at the last attempt
	// (reset), downAt when; operations fail with it at once until
	// retryEvery has passed, then the next one tries again.
	down   error
	downAt time.Time
	// logins counts C_Login calls (tests check that a refused PIN is not
	// presented again).
	logins atomic.Int64
	// tag is the first tagLen bytes of the vault's ID: every key this
	// backend creates for the vault has a CKA_ID starting with it, which
	// is how Keys tells the vault's keys from others on a shared token.
	tag []byte
	// prompted is a PIN typed at the terminal (pin-source=prompt), kept for
	// re-login after a session loss since it cannot be read again; wiped
	// on Close and when the token refuses it. Guarded like loginErr.
	prompted []byte

	// Session pool: idle holds ready sessions; open is every session this
	// backend opened and has not closed.
	idle chan p11.SessionHandle
	pmu  sync.Mutex
	open map[p11.SessionHandle]struct{}

	// Object index, CKA_ID → handle (index.go). Emptied on reset.
	cmu sync.Mutex
	idx objIndex
	// finds counts C_FindObjectsInit calls (tests check that a key's
	// first use does not search the token).
	finds atomic.Int64

	caps Capabilities
}

var (
	_ vault.Backend         = (*Backend)(nil)
	_ vault.WrappedImporter = (*Backend)(nil)
	_ vault.RandomSource    = (*Backend)(nil)
	_ vault.KeyInventory    = (*Backend)(nil)
)

// Open loads the module, finds the token, logs in once, and checks that the
// token can do what pskvault needs (HMAC mechanisms, key sizes, a
// known-answer self-test). A token that cannot gets an error wrapping
// vault.ErrUnsupported that names what is missing.
func Open(ctx context.Context, uri string) (*Backend, error) {
	return openTagged(ctx, uri, nil)
}

// openTagged is Open for a vault whose ID is vaultID (see Backend.tag);
// without one, keys get fully random CKA_IDs and Keys lists nothing.
func openTagged(ctx context.Context, uri string, vaultID []byte) (*Backend, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	mod, err := acquireModule(u.ModulePath)
	if err != nil {
		return nil, err
	}
	b := &Backend{
		uri:  u,
		mod:  mod,
		p:    mod.ctx,
		idle: make(chan p11.SessionHandle, u.sessions()),
		open: map[p11.SessionHandle]struct{}{},
		idx:  objIndex{m: map[[idLen]byte]entry{}, wk: map[string]p11.ObjectHandle{}},
	}
	if len(vaultID) >= tagLen {
		b.tag = bytes.Clone(vaultID[:tagLen])
	}
	if _, err := rand.Read(b.pinKey[:]); err != nil {
		mod.release()
		return nil, err
	}
	s, err := b.start()
	if err != nil {
		mod.release()
		return nil, err
	}
	loggedIn := u.PINSource != "" || b.token.Flags&(p11.CKF_LOGIN_REQUIRED|p11.CKF_PROTECTED_AUTHENTICATION_PATH) != 0
	b.caps = probeCapabilities(b.p, b.slot, s, loggedIn)
	b.fillPool(s)
	if len(b.caps.Hashes) == 0 {
		b.Close()
		return nil, fmt.Errorf("%w: PKCS#11 token %q cannot hold pskvault keys: %s", vault.ErrUnsupported, b.token.Label, strings.Join(b.caps.Problems, "; "))
	}
	// List the token's keys in the background (index.go): Open returns
	// now, and a key's first use finds its handle there once it is done.
	b.warmupFor()
	return b, nil
}

// start finds the token, opens one session and logs in on it. Callers hold
// mu exclusively (or own b outright) and hand the session to fillPool.
func (b *Backend) start() (p11.SessionHandle, error) {
	slot, info, hw, err := findToken(b.p, b.uri)
	if err != nil {
		return 0, err
	}
	b.slot, b.token, b.hwSlot = slot, info, hw
	s, err := b.p.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return 0, classify(fmt.Sprintf("C_OpenSession on token %q", info.Label), err)
	}
	if err := b.login(s, info); err != nil {
		b.p.CloseSession(s)
		return 0, err
	}
	b.pmu.Lock()
	b.open[s] = struct{}{}
	b.pmu.Unlock()
	return s, nil
}

// fillPool puts s (0 for none) and permits to open the rest of the pool's
// sessions into the empty pool.
func (b *Backend) fillPool(s p11.SessionHandle) {
	b.idle <- s
	for i := 1; i < cap(b.idle); i++ {
		b.idle <- 0
	}
}

// findToken returns the one slot whose token matches u.
func findToken(p *p11.Ctx, u *URI) (uint, p11.TokenInfo, bool, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, p11.TokenInfo{}, false, classify("C_GetSlotList", err)
	}
	var (
		found  []uint
		infos  []p11.TokenInfo
		labels []string
	)
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			continue
		}
		labels = append(labels, fmt.Sprintf("%q", ti.Label))
		if u.Token != "" && ti.Label != u.Token ||
			u.Manufacturer != "" && ti.ManufacturerID != u.Manufacturer ||
			u.Model != "" && ti.Model != u.Model ||
			u.Serial != "" && ti.SerialNumber != u.Serial ||
			u.SlotID != nil && *u.SlotID != s {
			continue
		}
		found = append(found, s)
		infos = append(infos, ti)
	}
	switch len(found) {
	case 0:
		avail := "none"
		if len(labels) > 0 {
			avail = strings.Join(labels, ", ")
		}
		return 0, p11.TokenInfo{}, false, fmt.Errorf("%w: no PKCS#11 token matches %s (tokens present: %s)", vault.ErrBackendUnavailable, u.selector(), avail)
	case 1:
		hw := false
		if si, err := p.GetSlotInfo(found[0]); err == nil {
			hw = si.Flags&p11.CKF_HW_SLOT != 0
		}
		return found[0], infos[0], hw, nil
	}
	return 0, p11.TokenInfo{}, false, fmt.Errorf("%w: %d PKCS#11 tokens match %s; add serial= to the URI", vault.ErrBackendUnavailable, len(found), u.selector())
}

func (u *URI) selector() string {
	var parts []string
	if u.Token != "" {
		parts = append(parts, "token="+u.Token)
	}
	if u.Manufacturer != "" {
		parts = append(parts, "manufacturer="+u.Manufacturer)
	}
	if u.Model != "" {
		parts = append(parts, "model="+u.Model)
	}
	if u.Serial != "" {
		parts = append(parts, "serial="+u.Serial)
	}
	if u.SlotID != nil {
		parts = append(parts, fmt.Sprintf("slot-id=%d", *u.SlotID))
	}
	return strings.Join(parts, ";")
}

// loginAction says how to log in to a token.
type loginAction int

const (
	loginNone    loginAction = iota // token needs no login and no PIN was given
	loginWithPIN                    // C_Login with the PIN from pin-source
	loginPINPad                     // C_Login with no PIN: the token's PIN pad collects it
)

// planLogin decides how to log in from the token flags and whether a PIN
// source is configured. It refuses to spend a token's last PIN try.
func planLogin(flags uint, label string, havePIN bool) (loginAction, error) {
	if flags&p11.CKF_USER_PIN_LOCKED != 0 {
		return 0, fmt.Errorf("%w: %w: the user PIN of token %q is locked; unlock it with the SO PIN (for example pkcs11-tool --init-pin --login --login-type so)", vault.ErrBackendUnavailable, ErrPIN, label)
	}
	if flags&p11.CKF_USER_PIN_TO_BE_CHANGED != 0 && havePIN {
		return 0, fmt.Errorf("%w: %w: token %q requires the user PIN to be changed before use", vault.ErrBackendUnavailable, ErrPIN, label)
	}
	switch {
	case havePIN:
		if flags&p11.CKF_USER_PIN_FINAL_TRY != 0 {
			return 0, fmt.Errorf("%w: %w: token %q has one PIN try left; pskvault will not spend it — log in once by hand (pkcs11-tool --login --test) to reset the counter", vault.ErrBackendUnavailable, ErrPIN, label)
		}
		return loginWithPIN, nil
	case flags&p11.CKF_PROTECTED_AUTHENTICATION_PATH != 0:
		return loginPINPad, nil
	case flags&p11.CKF_LOGIN_REQUIRED != 0:
		return 0, fmt.Errorf("%w: %w: token %q requires a PIN; add pin-source=file:/path/to/0600-file or pin-source=credential:NAME to the URI", vault.ErrBackendUnavailable, ErrPIN, label)
	}
	return loginNone, nil
}

// login logs the application in on session s. The PIN is read from its
// source for this one call and wiped afterwards. A PIN the token refuses is
// remembered (as a keyed hash) and never presented again: a later login
// reads the PIN source again and calls C_Login only when its content
// changed, so replacing the PIN file is picked up without a restart and
// without spending the token's PIN tries. A typed PIN is never retried.
func (b *Backend) login(s p11.SessionHandle, info p11.TokenInfo) error {
	if b.loginErr != nil && b.refusedPIN == nil {
		return b.loginErr
	}
	action, err := planLogin(info.Flags, info.Label, b.uri.PINSource != "")
	if err != nil {
		return err
	}
	var pin []byte
	switch action {
	case loginNone:
		return nil
	case loginWithPIN:
		if pin, err = b.pin(info.Label); err != nil {
			return fmt.Errorf("%w: %w", vault.ErrBackendUnavailable, err)
		}
		defer clear(pin[:cap(pin)])
	}
	var print []byte
	if action == loginWithPIN && b.uri.PINSource != "prompt" {
		m := hmac.New(sha256.New, b.pinKey[:])
		m.Write(pin)
		print = m.Sum(nil)
		if b.loginErr != nil && hmac.Equal(print, b.refusedPIN) {
			return b.loginErr // the PIN the token refused: not again
		}
	}
	b.logins.Add(1)
	err = loginPIN(b.p, s, pin)
	switch rvOf(err) {
	case p11.CKR_OK, p11.CKR_USER_ALREADY_LOGGED_IN:
		b.loginErr, b.refusedPIN = nil, nil
		return nil
	case p11.CKR_PIN_INCORRECT, p11.CKR_PIN_LEN_RANGE:
		clear(b.prompted)
		b.prompted = nil
		b.refusedPIN = print
		retry := "fix the PIN source and restart"
		if print != nil {
			retry = "it logs in again only once the content of " + b.uri.PINSource + " changes"
		}
		b.loginErr = fmt.Errorf("%w: %w: token %q refused the PIN from %s (%v); pskvault does not retry a refused PIN, so the token is not locked out: %s", vault.ErrBackendUnavailable, ErrPIN, info.Label, b.uri.PINSource, err, retry)
		return b.loginErr
	case p11.CKR_PIN_LOCKED:
		b.refusedPIN = print
		b.loginErr = fmt.Errorf("%w: %w: the user PIN of token %q is locked (%v)", vault.ErrBackendUnavailable, ErrPIN, info.Label, err)
		return b.loginErr
	}
	return classify(fmt.Sprintf("C_Login to token %q", info.Label), err)
}

// pin returns a copy of the PIN for one login, which the caller wipes:
// read from its file or credential each time, or typed at the terminal
// once (pin-source=prompt).
func (b *Backend) pin(label string) ([]byte, error) {
	if b.uri.PINSource != "prompt" {
		return readPIN(b.uri.PINSource)
	}
	if b.prompted == nil {
		p, err := promptPIN(label)
		if err != nil {
			return nil, err
		}
		b.prompted = p
	}
	return append(make([]byte, 0, len(b.prompted)), b.prompted...), nil
}

// loginPIN calls C_Login without copying pin into an immutable Go string, so
// the caller's clear() wipes the only Go copy. (miekg/pkcs11 copies it once
// more into C memory, which it frees without wiping.)
func loginPIN(p *p11.Ctx, s p11.SessionHandle, pin []byte) error {
	var ps string
	if len(pin) > 0 {
		ps = unsafe.String(&pin[0], len(pin))
	}
	return p.Login(s, p11.CKU_USER, ps)
}

// adopt checks a key just created or unwrapped on the token (sensitive,
// non-extractable, sign-only, CKA_VALUE unreadable) and caches its handle;
// a key that fails the check is destroyed at once.
func (b *Backend) adopt(s p11.SessionHandle, obj p11.ObjectHandle, id []byte, keyLen int) error {
	if err := verifyKey(b.p, s, obj, keyLen); err != nil {
		b.p.DestroyObject(s, obj)
		return err
	}
	b.indexPut(id, obj)
	return nil
}

// errClosed is returned after Close.
var errClosed = fmt.Errorf("%w: PKCS#11 backend is closed", vault.ErrBackendUnavailable)

// do runs fn on a pooled session. After an error that a fresh login or
// fresh sessions can cure, it rebuilds the pool and runs fn once more.
//
// While the token is away (or refuses the PIN) every operation fails at
// once with the reason, and one operation per retryEvery tries to reach
// it again (reset): that is how the backend comes back by itself when the
// token returns, without a restart.
func (b *Backend) do(ctx context.Context, fn func(s p11.SessionHandle, retry bool) error) error {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.mu.RLock()
		if b.closed {
			b.mu.RUnlock()
			return errClosed
		}
		if b.down != nil {
			down, at, gen := b.down, b.downAt, b.gen
			b.mu.RUnlock()
			if attempt > 0 || time.Since(at) < retryEvery {
				return down
			}
			if err := b.reset(gen); err != nil {
				return err
			}
			attempt = -1 // the token is back: fn may still be retried once
			continue
		}
		gen := b.gen
		s, err := b.getSession(ctx)
		if err == nil {
			err = fn(s, attempt > 0)
			b.putSession(s, err)
		}
		b.mu.RUnlock()
		if err == nil || attempt > 0 || !recoverable(err) {
			return err
		}
		if rerr := b.reset(gen); rerr != nil {
			return fmt.Errorf("%w (recovery after %v failed)", rerr, rvName(err))
		}
	}
}

// getSession takes a session from the pool, opening it if its permit
// carries none yet; it waits while every session is in use. Callers hold mu
// shared.
func (b *Backend) getSession(ctx context.Context) (p11.SessionHandle, error) {
	var s p11.SessionHandle
	select {
	case s = <-b.idle:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if s != 0 {
		return s, nil
	}
	s, err := b.p.OpenSession(b.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		b.idle <- 0
		return 0, classify("C_OpenSession", err)
	}
	b.pmu.Lock()
	b.open[s] = struct{}{}
	b.pmu.Unlock()
	return s, nil
}

// putSession returns s to the pool unless err says it is no longer usable;
// such a session is left in b.open for the next reset to close, and its
// place in the pool becomes a permit to open a new one.
func (b *Backend) putSession(s p11.SessionHandle, err error) {
	if err != nil && recoverable(err) {
		b.idle <- 0
		return
	}
	b.idle <- s // never blocks: the pool holds exactly cap(idle) entries
}

// reset closes every session, finds the token again (it may be back in
// another slot after re-insertion), logs in again and bumps the generation.
// gen is the generation the failed operation ran under: if another
// goroutine already reset since, there is nothing to do.
func (b *Backend) reset(gen uint64) error {
	b.stopWarmup() // it holds mu shared while it lists the token
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	if b.gen != gen {
		return nil
	}
	b.closeSessions()
	b.gen++
	b.indexReset(b.gen) // handles of the old sessions' login are not reused
	s, err := b.start()
	if err != nil && !errors.Is(err, ErrPIN) {
		// The token may be back where the module no longer looks (SoftHSM2
		// scans its token directory only in C_Initialize): start the
		// module afresh when this backend is its only user.
		if ran, rerr := b.mod.reinit(); ran {
			err = rerr
			if err == nil {
				s, err = b.start()
			}
		}
	}
	b.fillPool(s) // with s == 0 the next operation opens a session
	if err != nil {
		b.down, b.downAt = err, time.Now()
		return err
	}
	b.down = nil
	b.warmupFor() // runs once this reset lets go of mu
	return nil
}

// closeSessions empties the pool and closes every session this backend
// opened. Callers hold mu exclusively (or own b outright), so no session is
// in use.
func (b *Backend) closeSessions() {
	for len(b.idle) > 0 {
		<-b.idle
	}
	b.pmu.Lock()
	for s := range b.open {
		b.p.CloseSession(s) // a session closed behind our back just errors
	}
	clear(b.open)
	b.pmu.Unlock()
}

// Close closes the sessions and releases the module. The token logs the
// application out when its last session closes.
func (b *Backend) Close() error {
	b.stopWarmup()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.indexReset(b.gen + 1)
	clear(b.prompted)
	b.prompted = nil
	b.closeSessions()
	b.mod.release()
	return nil
}

// Info describes the token.
func (b *Backend) Info() vault.BackendInfo {
	b.mu.RLock()
	t, hw := b.token, b.hwSlot
	b.mu.RUnlock()
	info := vault.BackendInfo{
		Name:        "pkcs11",
		Description: fmt.Sprintf("PKCS#11 token %q (%s %s, serial %s) via %s", t.Label, t.ManufacturerID, t.Model, t.SerialNumber, b.uri.ModulePath),
		Hardware:    hw,
	}
	for _, h := range b.caps.Hashes {
		info.Hashes = append(info.Hashes, h)
		info.HashNames = append(info.HashNames, h.String())
	}
	return info
}

// Capabilities reports what Open found the token can do.
func (b *Backend) Capabilities() Capabilities { return b.caps }

func (b *Backend) checkHash(h importer.Hash) error {
	if !h.Valid() {
		return fmt.Errorf("%w: %w %d", vault.ErrUnsupported, importer.ErrUnknownHash, uint8(h))
	}
	for _, x := range b.caps.Hashes {
		if x == h {
			return nil
		}
	}
	return fmt.Errorf("%w: PKCS#11 token %q cannot hold %s keys: %s", vault.ErrUnsupported, b.token.Label, h, b.caps.problemFor(hmacMechanism(h)))
}

func hmacMechanism(h importer.Hash) uint {
	if h == importer.SHA384 {
		return p11.CKM_SHA384_HMAC
	}
	return p11.CKM_SHA256_HMAC
}

// keyTemplate is the template of every PRK object: a token-resident,
// private, sensitive, non-extractable, non-modifiable generic secret that
// can only sign (HMAC).
func keyTemplate(id []byte, label string, onToken bool) []*p11.Attribute {
	if label == "" {
		label = "pskvault"
	}
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_TOKEN, onToken),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_MODIFIABLE, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
}

// StoreKey creates the PRK as a token object with keyTemplate, reads its
// attributes back and destroys it again unless the token reports it
// sensitive and non-extractable with an unreadable value.
func (b *Backend) StoreKey(ctx context.Context, req vault.StoreRequest) ([]byte, error) {
	for k := range req.Params {
		return nil, fmt.Errorf("%w: unknown PKCS#11 key parameter %q (none are defined)", vault.ErrUnsupported, k)
	}
	if err := b.checkHash(req.Hash); err != nil {
		return nil, err
	}
	if len(req.PRK) != req.Hash.Size() {
		return nil, fmt.Errorf("%w: PRK is %d bytes, want %d for %s", importer.ErrBadPRK, len(req.PRK), req.Hash.Size(), req.Hash)
	}
	id, err := b.newID(req.Hash)
	if err != nil {
		return nil, err
	}
	if err := vault.NoteNewKey(ctx, encodeHandle(req.Hash, id)); err != nil {
		return nil, err
	}
	tmpl := append(keyTemplate(id, req.Label, true), p11.NewAttribute(p11.CKA_VALUE, req.PRK))
	err = b.do(ctx, func(s p11.SessionHandle, retry bool) error {
		if retry {
			// A first attempt may have created the object before failing.
			b.destroyAll(s, id)
		}
		obj, err := b.p.CreateObject(s, tmpl)
		if err != nil {
			return classify("C_CreateObject of a generic secret", err)
		}
		return b.adopt(s, obj, id, req.Hash.Size())
	})
	if err != nil {
		return nil, err
	}
	return encodeHandle(req.Hash, id), nil
}

// unwrap unwraps blob into a token object with template tmpl. Some tokens
// (SoftHSM2 among them) refuse CKA_MODIFIABLE in an unwrap template; then
// the key is unwrapped into a session object and copied to the token with
// CKA_MODIFIABLE=false, and the session object destroyed.
func (b *Backend) unwrap(s p11.SessionHandle, mech []*p11.Mechanism, wk p11.ObjectHandle, blob []byte, tmpl []*p11.Attribute) (p11.ObjectHandle, error) {
	obj, err := b.p.UnwrapKey(s, mech, wk, blob, tmpl)
	if !isRV(err, p11.CKR_ATTRIBUTE_READ_ONLY) && !isRV(err, p11.CKR_TEMPLATE_INCONSISTENT) {
		return obj, err
	}
	var sessTmpl []*p11.Attribute
	for _, a := range tmpl {
		switch a.Type {
		case p11.CKA_MODIFIABLE:
		case p11.CKA_TOKEN:
			sessTmpl = append(sessTmpl, p11.NewAttribute(p11.CKA_TOKEN, false))
		default:
			sessTmpl = append(sessTmpl, a)
		}
	}
	tmp, err := b.p.UnwrapKey(s, mech, wk, blob, sessTmpl)
	if err != nil {
		return 0, err
	}
	defer b.p.DestroyObject(s, tmp)
	if err := verifyKey(b.p, s, tmp, 0); err != nil {
		return 0, err
	}
	obj, err = b.p.CopyObject(s, tmp, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_MODIFIABLE, false),
	})
	if err != nil {
		return 0, classify("C_CopyObject of the unwrapped key to the token", err)
	}
	return obj, nil
}

// ErrInsecureKey reports a key object the token does not protect as
// pskvault requires. The object is destroyed.
var ErrInsecureKey = errors.New("token did not protect the key")

// verifyKey checks, from the token's own attributes, that obj is a
// sensitive, non-extractable generic secret usable only for signing, and
// that its value cannot be read. Error codes are not trusted alone: some
// tokens answer a CKA_VALUE read with CKR_OK and zero bytes.
func verifyKey(p *p11.Ctx, s p11.SessionHandle, obj p11.ObjectHandle, wantLen int) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %w: %s", vault.ErrUnsupported, ErrInsecureKey, fmt.Sprintf(format, a...))
	}
	if v, ok := attrULong(p, s, obj, p11.CKA_CLASS); !ok || v != p11.CKO_SECRET_KEY {
		return bad("CKA_CLASS is not CKO_SECRET_KEY")
	}
	if v, ok := attrULong(p, s, obj, p11.CKA_KEY_TYPE); !ok || v != p11.CKK_GENERIC_SECRET {
		return bad("CKA_KEY_TYPE is not CKK_GENERIC_SECRET")
	}
	must := []struct {
		attr uint
		name string
		want bool
	}{
		{p11.CKA_SENSITIVE, "CKA_SENSITIVE", true},
		{p11.CKA_EXTRACTABLE, "CKA_EXTRACTABLE", false},
		{p11.CKA_SIGN, "CKA_SIGN", true},
		{p11.CKA_TOKEN, "CKA_TOKEN", true},
	}
	for _, m := range must {
		v, ok := attrBool(p, s, obj, m.attr)
		if !ok {
			return bad("%s cannot be read back", m.name)
		}
		if m.attr == p11.CKA_TOKEN {
			continue // session objects (self-test) are checked with the rest
		}
		if v != m.want {
			return bad("%s is %v, want %v", m.name, v, m.want)
		}
	}
	// Other uses must be off where the token reports them at all.
	for _, a := range []struct {
		attr uint
		name string
	}{
		{p11.CKA_VERIFY, "CKA_VERIFY"}, {p11.CKA_ENCRYPT, "CKA_ENCRYPT"}, {p11.CKA_DECRYPT, "CKA_DECRYPT"},
		{p11.CKA_WRAP, "CKA_WRAP"}, {p11.CKA_UNWRAP, "CKA_UNWRAP"}, {p11.CKA_DERIVE, "CKA_DERIVE"},
	} {
		if v, ok := attrBool(p, s, obj, a.attr); ok && v {
			return bad("%s is true", a.name)
		}
	}
	if m, ok := attrBool(p, s, obj, p11.CKA_MODIFIABLE); ok && m {
		if t, _ := attrBool(p, s, obj, p11.CKA_TOKEN); t {
			return bad("CKA_MODIFIABLE is true")
		}
	}
	// SoftHSM2 reports CKA_VALUE_LEN 0 for unwrapped generic secrets:
	// 0 means unknown, and the RFC 5649 blob length bounds the size.
	if v, ok := attrULong(p, s, obj, p11.CKA_VALUE_LEN); wantLen > 0 && ok && v != 0 && v != uint(wantLen) {
		return fmt.Errorf("%w: key is %d bytes, want %d", importer.ErrBadPRK, v, wantLen)
	}
	attrs, err := p.GetAttributeValue(s, obj, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
	if err == nil && len(attrs) == 1 && len(attrs[0].Value) > 0 {
		clear(attrs[0].Value)
		return bad("CKA_VALUE is readable")
	}
	return nil
}

func attrBytes(p *p11.Ctx, s p11.SessionHandle, obj p11.ObjectHandle, attr uint) ([]byte, bool) {
	a, err := p.GetAttributeValue(s, obj, []*p11.Attribute{p11.NewAttribute(attr, nil)})
	if err != nil || len(a) != 1 || a[0].Value == nil {
		return nil, false
	}
	return a[0].Value, true
}

func attrBool(p *p11.Ctx, s p11.SessionHandle, obj p11.ObjectHandle, attr uint) (bool, bool) {
	v, ok := attrBytes(p, s, obj, attr)
	if !ok || len(v) != 1 {
		return false, false
	}
	return v[0] != 0, true
}

func attrULong(p *p11.Ctx, s p11.SessionHandle, obj p11.ObjectHandle, attr uint) (uint, bool) {
	v, ok := attrBytes(p, s, obj, attr)
	if !ok {
		return 0, false
	}
	switch len(v) {
	case 8:
		return uint(binary.NativeEndian.Uint64(v)), true
	case 4:
		return uint(binary.NativeEndian.Uint32(v)), true
	}
	return 0, false
}

// findKey returns the object with CKA_ID id: from the index, where the
// enumeration (index.go) or an earlier use put it, or else from a targeted
// search of the token. An object is verified (verifyKey, and for one the
// enumeration found, its CKA_ID read back) before its first use in a
// generation, so a handle that has come to name another object is never
// used.
func (b *Backend) findKey(s p11.SessionHandle, id []byte, h importer.Hash) (p11.ObjectHandle, error) {
	if e, ok := b.indexGet(id); ok && !e.dup {
		if e.verified {
			return e.obj, nil
		}
		same, err := sameID(b.p, s, e.obj, id)
		switch {
		case err == nil && same:
			if err := verifyKey(b.p, s, e.obj, h.Size()); err != nil {
				return 0, err
			}
			b.markVerified(id, e.obj)
			return e.obj, nil
		case err == nil, isRV(err, p11.CKR_OBJECT_HANDLE_INVALID), isRV(err, p11.CKR_KEY_HANDLE_INVALID):
			b.indexDrop(id) // destroyed, or the handle names another object now: search
		default:
			return 0, classify("C_GetAttributeValue(CKA_ID)", err)
		}
	}
	objs, err := b.findPrivate(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_ID, id),
	}, 2)
	if err != nil {
		return 0, err
	}
	switch len(objs) {
	case 0:
		if err := b.confirmPresent(); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("%w: no secret key with CKA_ID %s on token %q", vault.ErrKeyNotFound, hex.EncodeToString(id), b.token.Label)
	case 1:
	default:
		return 0, fmt.Errorf("several secret keys with CKA_ID %s on token %q; refusing to guess", hex.EncodeToString(id), b.token.Label)
	}
	if err := verifyKey(b.p, s, objs[0], h.Size()); err != nil {
		return 0, err
	}
	b.indexPut(id, objs[0])
	return objs[0], nil
}

// findPrivate is findObjects for objects that are only visible after login.
// A lost login hides private objects instead of failing, so an empty
// result on a session that is not logged in is reported as
// CKR_USER_NOT_LOGGED_IN, which makes do() log in again and retry, rather
// than as "no such key".
func (b *Backend) findPrivate(s p11.SessionHandle, tmpl []*p11.Attribute, max int) ([]p11.ObjectHandle, error) {
	b.finds.Add(1)
	objs, err := findObjects(b.p, s, tmpl, max)
	if err != nil || len(objs) > 0 || !b.loginExpected() {
		return objs, err
	}
	si, err := b.p.GetSessionInfo(s)
	if err != nil {
		return nil, classify("C_GetSessionInfo", err)
	}
	if si.State != p11.CKS_RW_USER_FUNCTIONS && si.State != p11.CKS_RO_USER_FUNCTIONS {
		return nil, classify("C_FindObjects (session not logged in)", p11.Error(p11.CKR_USER_NOT_LOGGED_IN))
	}
	return objs, nil
}

// confirmPresent checks that the token still answers as the one this
// backend opened (same label and serial, initialized) before an empty
// search result is taken to mean "no such object". A token that went
// away can answer a search with nothing at all — SoftHSM2 does when its
// token directory disappears — and "not there" must never be mistaken for
// "already gone": DeleteKey would report success while the key stays.
// Its error wraps errTokenLost, so do() rebuilds the session pool.
func (b *Backend) confirmPresent() error {
	ti, err := b.p.GetTokenInfo(b.slot)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w: token %q does not answer (C_GetTokenInfo: %v)", vault.ErrBackendUnavailable, errTokenLost, b.token.Label, err)
	case ti.Label != b.token.Label || ti.SerialNumber != b.token.SerialNumber || ti.Flags&p11.CKF_TOKEN_INITIALIZED == 0:
		return fmt.Errorf("%w: %w: the token in slot %d is no longer %q serial %s", vault.ErrBackendUnavailable, errTokenLost, b.slot, b.token.Label, b.token.SerialNumber)
	}
	return nil
}

// loginExpected says whether the backend logs in (and so whether a
// session that is not logged in has lost its login).
func (b *Backend) loginExpected() bool {
	return b.uri.PINSource != "" || b.token.Flags&(p11.CKF_LOGIN_REQUIRED|p11.CKF_PROTECTED_AUTHENTICATION_PATH) != 0
}

func findObjects(p *p11.Ctx, s p11.SessionHandle, tmpl []*p11.Attribute, max int) ([]p11.ObjectHandle, error) {
	if err := p.FindObjectsInit(s, tmpl); err != nil {
		return nil, classify("C_FindObjectsInit", err)
	}
	objs, _, err := p.FindObjects(s, max)
	ferr := p.FindObjectsFinal(s)
	if err != nil {
		return nil, classify("C_FindObjects", err)
	}
	if ferr != nil {
		return nil, classify("C_FindObjectsFinal", ferr)
	}
	return objs, nil
}

// destroyAll destroys every secret key with CKA_ID id.
//
// With a complete index (index.go) that holds id once, the object is
// destroyed by its handle, after its CKA_ID is read back: no search. The
// search remains for an ID the index does not hold or holds twice, and
// when the index is not complete (not yet listed, or reset since): "not
// in the index" is never taken for "gone".
func (b *Backend) destroyAll(s p11.SessionHandle, id []byte) error {
	if e, ok, complete := b.indexEntry(id); ok && complete && !e.dup {
		b.indexDrop(id)
		same, err := sameID(b.p, s, e.obj, id)
		switch {
		case err == nil && same:
			err := b.p.DestroyObject(s, e.obj)
			if err == nil {
				return nil
			}
			if !isRV(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				return classify("C_DestroyObject", err)
			}
		case err == nil, isRV(err, p11.CKR_OBJECT_HANDLE_INVALID), isRV(err, p11.CKR_KEY_HANDLE_INVALID):
		default:
			return classify("C_GetAttributeValue(CKA_ID)", err)
		}
		// Destroyed or replaced behind our back: search.
	}
	b.indexDrop(id)
	objs, err := b.findPrivate(s, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_ID, id),
	}, 16)
	if err != nil {
		return err
	}
	if len(objs) == 0 {
		return b.confirmPresent()
	}
	for _, o := range objs {
		if err := b.p.DestroyObject(s, o); err != nil && !isRV(err, p11.CKR_OBJECT_HANDLE_INVALID) {
			return classify("C_DestroyObject", err)
		}
	}
	return nil
}

// HMAC computes HMAC(key, data) on the token: C_SignInit + C_Sign with
// CKM_SHA256_HMAC or CKM_SHA384_HMAC.
func (b *Backend) HMAC(ctx context.Context, key vault.KeyRef, data []byte) ([]byte, error) {
	h, id, err := decodeHandle(key.Handle)
	if err != nil {
		return nil, err
	}
	if key.Hash != h {
		return nil, fmt.Errorf("%w: handle is for %s, request says %s", ErrBadHandle, h, key.Hash)
	}
	if err := b.checkHash(h); err != nil {
		return nil, err
	}
	mech := []*p11.Mechanism{p11.NewMechanism(hmacMechanism(h), nil)}
	if err := b.awaitIndex(ctx, id); err != nil {
		return nil, err
	}
	var out []byte
	err = b.do(ctx, func(s p11.SessionHandle, _ bool) error {
		for try := 0; ; try++ {
			obj, err := b.findKey(s, id, h)
			if err != nil {
				return err
			}
			err = b.p.SignInit(s, mech, obj)
			if err != nil && try == 0 && (isRV(err, p11.CKR_KEY_HANDLE_INVALID) || isRV(err, p11.CKR_OBJECT_HANDLE_INVALID)) {
				b.indexDrop(id) // deleted or recreated behind our back: look again
				continue
			}
			if err != nil {
				return classify(fmt.Sprintf("C_SignInit(%s)", mechName(hmacMechanism(h))), err)
			}
			out, err = b.p.Sign(s, data)
			if err != nil {
				return classify(fmt.Sprintf("C_Sign(%s)", mechName(hmacMechanism(h))), err)
			}
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	if len(out) != h.Size() {
		clear(out)
		return nil, fmt.Errorf("%w: token returned a %d-byte HMAC, want %d", importer.ErrBadPRK, len(out), h.Size())
	}
	return out, nil
}

// DeleteKey destroys the key object. A key that is already gone is not an
// error; a token that does not answer as itself is (vault.ErrBackendUnavailable),
// never taken for "already gone".
func (b *Backend) DeleteKey(ctx context.Context, key vault.KeyRef) error {
	_, id, err := decodeHandle(key.Handle)
	if err != nil {
		return err
	}
	if err := b.awaitIndex(ctx, nil); err != nil {
		return err
	}
	return b.do(ctx, func(s p11.SessionHandle, _ bool) error {
		return b.destroyAll(s, id)
	})
}

// Random returns n bytes from the token's RNG (C_GenerateRandom).
func (b *Backend) Random(ctx context.Context, n int) ([]byte, error) {
	var out []byte
	err := b.do(ctx, func(s p11.SessionHandle, _ bool) error {
		var err error
		out, err = b.p.GenerateRandom(s, n)
		return classify("C_GenerateRandom", err)
	})
	if err == nil && len(out) != n {
		return nil, fmt.Errorf("C_GenerateRandom returned %d bytes, want %d", len(out), n)
	}
	return out, err
}

// ImportWrapped unwraps blob (RFC 5649 AES key wrap with padding, see
// WrapPRK) with CKM_AES_KEY_WRAP_PAD under a wrapping key already on the
// token, into a PRK object with the same template and checks as StoreKey.
//
// Parameters: "wrapping-key" (the wrapping key's CKA_LABEL) or
// "wrapping-key-id" (its CKA_ID in hex), defaulting to object= / id= of the
// backend URI; "label" (CKA_LABEL of the new key).
func (b *Backend) ImportWrapped(ctx context.Context, blob []byte, h importer.Hash, params map[string]string) ([]byte, error) {
	wkLabel, wkID, label := b.uri.Object, b.uri.ID, ""
	for k, v := range params {
		switch k {
		case "wrapping-key":
			wkLabel, wkID = v, nil
		case "wrapping-key-id":
			id, err := hex.DecodeString(v)
			if err != nil || len(id) == 0 {
				return nil, fmt.Errorf("%w: wrapping-key-id must be hex", vault.ErrUnsupported)
			}
			wkLabel, wkID = "", id
		case "label":
			label = v
		default:
			return nil, fmt.Errorf("%w: unknown PKCS#11 wrapped-import parameter %q (known: wrapping-key, wrapping-key-id, label)", vault.ErrUnsupported, k)
		}
	}
	if _, ok := params["wrapping-key"]; ok {
		if _, ok2 := params["wrapping-key-id"]; ok2 {
			return nil, fmt.Errorf("%w: give wrapping-key or wrapping-key-id, not both", vault.ErrUnsupported)
		}
	}
	if wkLabel == "" && len(wkID) == 0 {
		return nil, fmt.Errorf("%w: name the wrapping key on the token: parameter wrapping-key=LABEL, or object=LABEL in the backend URI", vault.ErrUnsupported)
	}
	if err := b.checkHash(h); err != nil {
		return nil, err
	}
	if !b.caps.UnwrapAESPad {
		return nil, fmt.Errorf("%w: PKCS#11 token %q cannot import wrapped keys: %s", vault.ErrUnsupported, b.token.Label, b.caps.problemFor(p11.CKM_AES_KEY_WRAP_PAD))
	}
	if want := 8 + (h.Size()+7)/8*8; len(blob) != want {
		return nil, fmt.Errorf("%w: a wrapped %s PRK is %d bytes (RFC 5649), got %d", vault.ErrInvalid, h, want, len(blob))
	}
	wkTmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
	}
	wkName := "CKA_ID " + hex.EncodeToString(wkID)
	if wkLabel != "" {
		wkTmpl = append(wkTmpl, p11.NewAttribute(p11.CKA_LABEL, wkLabel))
		wkName = fmt.Sprintf("label %q", wkLabel)
	} else {
		wkTmpl = append(wkTmpl, p11.NewAttribute(p11.CKA_ID, wkID))
	}
	id, err := b.newID(h)
	if err != nil {
		return nil, err
	}
	if err := vault.NoteNewKey(ctx, encodeHandle(h, id)); err != nil {
		return nil, err
	}
	tmpl := keyTemplate(id, label, true)
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}
	err = b.do(ctx, func(s p11.SessionHandle, retry bool) error {
		if retry {
			b.destroyAll(s, id)
		}
		wk, err := b.wrappingKey(s, wkTmpl, wkName)
		if err != nil {
			return err
		}
		obj, err := b.unwrap(s, mech, wk, blob, tmpl)
		if isRV(err, p11.CKR_WRAPPING_KEY_HANDLE_INVALID) || isRV(err, p11.CKR_OBJECT_HANDLE_INVALID) || isRV(err, p11.CKR_KEY_HANDLE_INVALID) {
			b.wkDrop(wkName) // destroyed since it was found: look again
			if wk, err = b.wrappingKey(s, wkTmpl, wkName); err != nil {
				return err
			}
			obj, err = b.unwrap(s, mech, wk, blob, tmpl)
		}
		switch rvOf(err) {
		case p11.CKR_OK:
		case p11.CKR_WRAPPED_KEY_INVALID, p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_WRAPPED_KEY_LEN_RANGE, p11.CKR_GENERAL_ERROR:
			// SoftHSM2 answers an integrity-check failure with CKR_GENERAL_ERROR.
			return fmt.Errorf("%w: blob does not unwrap under the wrapping key with %s: wrong wrapping key or corrupted blob (%v)", vault.ErrInvalid, wkName, rvName(err))
		default:
			return classify(fmt.Sprintf("C_UnwrapKey(CKM_AES_KEY_WRAP_PAD) under wrapping key with %s", wkName), err)
		}
		return b.adopt(s, obj, id, h.Size())
	})
	if err != nil {
		return nil, err
	}
	return encodeHandle(h, id), nil
}

// ImportWrappingKey places kek (a 16-, 24- or 32-byte AES key) on the token
// as a sensitive, non-extractable key that can only unwrap, labelled label:
// the wrapping key ImportWrapped uses. The provisioning side keeps kek and
// makes blobs with WrapPRK; the caller wipes kek.
func (b *Backend) ImportWrappingKey(ctx context.Context, label string, kek []byte) error {
	switch len(kek) {
	case 16, 24, 32:
	default:
		return fmt.Errorf("%w: wrapping key must be 16, 24 or 32 bytes, got %d", ErrWrap, len(kek))
	}
	if label == "" {
		return fmt.Errorf("%w: the wrapping key needs a label", ErrWrap)
	}
	id := make([]byte, idLen)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, false),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
		p11.NewAttribute(p11.CKA_MODIFIABLE, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_VALUE, kek),
	}
	return b.do(ctx, func(s p11.SessionHandle, retry bool) error {
		existing, err := b.findPrivate(s, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_LABEL, label),
		}, 1)
		if err != nil {
			return err
		}
		if len(existing) > 0 {
			return fmt.Errorf("a secret key labelled %q is already on token %q", label, b.token.Label)
		}
		_, err = b.p.CreateObject(s, tmpl)
		return classify("C_CreateObject of an AES wrapping key", err)
	})
}

// newID returns the CKA_ID for a new key for hash h: tagged with the
// vault's ID when there is one (see tagLen), fully random otherwise.
func (b *Backend) newID(h importer.Hash) ([]byte, error) {
	id := make([]byte, idLen)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	if len(b.tag) == tagLen {
		copy(id, b.tag)
		id[tagLen] = byte(h)
	}
	return id, nil
}

// Keys lists the handles of every key on the token that carries this
// vault's tag (vault.KeyInventory), so that the vault can find keys no
// record names after a crash. It answers from the complete object index
// (index.go) of the current session generation — the token's keys when
// the listing Open (or the last reset) started began, plus those this
// backend created since, minus those it destroyed — waiting for that
// listing, or starting one, when there is none. The listing reads the
// whole list and then checks that the token still answers as itself (and
// so does Keys before answering from an index made earlier), so a token
// that went away yields an error, never a short or empty list. Keys made
// on the token by another program after the listing are not in it.
// Without a vault ID it lists nothing.
func (b *Backend) Keys(ctx context.Context) ([][]byte, error) {
	if len(b.tag) != tagLen {
		return nil, nil
	}
	return b.indexedKeys(ctx)
}
