//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto/hmac"
	"fmt"
	"strings"

	p11 "github.com/miekg/pkcs11"

	"github.com/pskvault/pskvault/importer"
)

// probeCapabilities asks the token for the mechanisms pskvault needs, then
// runs a known-answer HMAC self-test for each usable hash on a throwaway
// session key created with the PRK template. A hash whose self-test fails
// is dropped. loggedIn says whether private session objects can be made.
func probeCapabilities(p *p11.Ctx, slot uint, s p11.SessionHandle, loggedIn bool) Capabilities {
	have := map[uint]MechInfo{}
	list, err := p.GetMechanismList(slot)
	if err == nil {
		for _, m := range list {
			for _, n := range needs {
				if m.Mechanism != n.mech {
					continue
				}
				mi, err := p.GetMechanismInfo(slot, []*p11.Mechanism{p11.NewMechanism(n.mech, nil)})
				if err == nil {
					have[n.mech] = MechInfo{MinKeySize: mi.MinKeySize, MaxKeySize: mi.MaxKeySize, Flags: mi.Flags}
				}
			}
		}
	}
	c := checkMechanisms(have)
	if err != nil {
		c.Problems = append(c.Problems, fmt.Sprintf("C_GetMechanismList failed: %v", err))
	}
	c.SelfTest = map[string]string{}
	var ok []importer.Hash
	for _, h := range c.Hashes {
		if err := selfTest(p, s, h, loggedIn); err != nil {
			msg := fmt.Sprintf("%s self-test failed: %v", mechName(hmacMechanism(h)), err)
			c.SelfTest[h.String()] = "failed: " + err.Error()
			c.Problems = append(c.Problems, msg)
			c.problemBy[hmacMechanism(h)] = msg
			continue
		}
		c.SelfTest[h.String()] = "ok"
		ok = append(ok, h)
	}
	c.Hashes = ok
	return c
}

// selfTestMessage is HMACed under a fixed, public test key.
var selfTestMessage = []byte("pskvault PKCS#11 known-answer self-test")

func selfTestKey(h importer.Hash) []byte {
	k := make([]byte, h.Size())
	for i := range k {
		k[i] = byte(0xa0 + i)
	}
	return k
}

// selfTest creates a session (not token) object with the PRK template and a
// public test value, HMACs a fixed message on the token and compares with
// crypto/hmac. It also proves the token accepts the template.
func selfTest(p *p11.Ctx, s p11.SessionHandle, h importer.Hash, loggedIn bool) error {
	key := selfTestKey(h)
	tmpl := keyTemplate([]byte("pskvault-selftest"), "pskvault-selftest", false)
	if !loggedIn {
		for _, a := range tmpl {
			if a.Type == p11.CKA_PRIVATE {
				a.Value = []byte{0}
			}
		}
	}
	tmpl = append(tmpl, p11.NewAttribute(p11.CKA_VALUE, key))
	obj, err := p.CreateObject(s, tmpl)
	if err != nil {
		return fmt.Errorf("C_CreateObject of a generic secret with the pskvault template refused: %w", err)
	}
	defer p.DestroyObject(s, obj)
	if err := verifyKey(p, s, obj, h.Size()); err != nil {
		return err
	}
	mech := hmacMechanism(h)
	if err := p.SignInit(s, []*p11.Mechanism{p11.NewMechanism(mech, nil)}, obj); err != nil {
		return fmt.Errorf("C_SignInit: %w", err)
	}
	got, err := p.Sign(s, selfTestMessage)
	if err != nil {
		return fmt.Errorf("C_Sign: %w", err)
	}
	m := hmac.New(h.New(), key)
	m.Write(selfTestMessage)
	if !bytes.Equal(got, m.Sum(nil)) {
		return fmt.Errorf("token HMAC differs from the known answer")
	}
	return nil
}

// Probe reports what the token a PKCS#11 URI names can do and whether
// pskvault can use it. It logs in when the URI gives a pin-source or the
// token has a PIN pad; without a login, the self-test runs on a public
// session key where the token allows that. It creates no token objects.
func Probe(uri string) (*Report, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	mod, err := acquireModule(u.ModulePath)
	if err != nil {
		return nil, err
	}
	defer mod.release()
	p := mod.ctx
	r := &Report{Module: u.ModulePath}
	if li, err := p.GetInfo(); err == nil {
		r.Library = fmt.Sprintf("%s %s %d.%d (Cryptoki %d.%d)", li.ManufacturerID, li.LibraryDescription,
			li.LibraryVersion.Major, li.LibraryVersion.Minor, li.CryptokiVersion.Major, li.CryptokiVersion.Minor)
	}
	slot, ti, hw, err := findToken(p, u)
	if err != nil {
		return nil, err
	}
	r.Token = TokenReport{
		Label: ti.Label, Manufacturer: ti.ManufacturerID, Model: ti.Model, Serial: ti.SerialNumber,
		Slot: slot, HardwareSlot: hw,
		LoginRequired:     ti.Flags&p11.CKF_LOGIN_REQUIRED != 0,
		ProtectedAuthPath: ti.Flags&p11.CKF_PROTECTED_AUTHENTICATION_PATH != 0,
		Flags:             tokenFlags(ti.Flags),
	}
	s, err := p.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return nil, classify("C_OpenSession", err)
	}
	defer p.CloseSession(s)
	b := &Backend{uri: u, p: p}
	var loginProblem string
	if err := b.login(s, ti); err != nil {
		loginProblem = err.Error()
	} else if u.PINSource != "" || r.Token.ProtectedAuthPath {
		r.LoggedIn = true
	}
	r.Caps = probeCapabilities(p, slot, s, r.LoggedIn)
	for _, h := range r.Caps.Hashes {
		r.Hashes = append(r.Hashes, h.String())
	}
	if loginProblem != "" {
		r.Caps.Problems = append([]string{loginProblem}, r.Caps.Problems...)
	}
	switch {
	case loginProblem != "":
		r.Verdict = "cannot log in: " + loginProblem
	case len(r.Hashes) == 2:
		r.Usable = true
		r.Verdict = "usable for sha256 and sha384 PSKs"
	case len(r.Hashes) == 1:
		r.Usable = true
		r.Verdict = fmt.Sprintf("usable for %s PSKs only (%s)", r.Hashes[0], strings.Join(r.Caps.Problems, "; "))
	default:
		r.Verdict = "NOT usable: " + strings.Join(r.Caps.Problems, "; ")
	}
	if r.Usable && !r.Caps.UnwrapAESPad {
		r.Verdict += "; wrapped import unavailable"
	}
	return r, nil
}

func tokenFlags(f uint) []string {
	names := []struct {
		f uint
		n string
	}{
		{p11.CKF_RNG, "RNG"}, {p11.CKF_WRITE_PROTECTED, "WRITE_PROTECTED"}, {p11.CKF_LOGIN_REQUIRED, "LOGIN_REQUIRED"},
		{p11.CKF_USER_PIN_INITIALIZED, "USER_PIN_INITIALIZED"}, {p11.CKF_PROTECTED_AUTHENTICATION_PATH, "PROTECTED_AUTHENTICATION_PATH"},
		{p11.CKF_TOKEN_INITIALIZED, "TOKEN_INITIALIZED"}, {p11.CKF_USER_PIN_COUNT_LOW, "USER_PIN_COUNT_LOW"},
		{p11.CKF_USER_PIN_FINAL_TRY, "USER_PIN_FINAL_TRY"}, {p11.CKF_USER_PIN_LOCKED, "USER_PIN_LOCKED"},
		{p11.CKF_USER_PIN_TO_BE_CHANGED, "USER_PIN_TO_BE_CHANGED"},
	}
	var out []string
	for _, n := range names {
		if f&n.f != 0 {
			out = append(out, n.n)
		}
	}
	return out
}

// rvName names a PKCS#11 error for messages.
func rvName(err error) string {
	if rv := rvOf(err); rv != 0 {
		return p11.Error(rv).Error()
	}
	return err.Error()
}
