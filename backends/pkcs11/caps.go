package pkcs11

import (
	"fmt"
	"strings"

	"github.com/pskvault/pskvault/importer"
)

// PKCS#11 constants the capability check needs, so that it can run (and be
// tested) without cgo. Values from pkcs11t.h.
const (
	ckmSHA256HMAC    = 0x00000251
	ckmSHA384HMAC    = 0x00000261
	ckmAESKeyWrapPad = 0x0000210A
	ckmAESKeyWrap    = 0x00002109
	ckmGenericKeyGen = 0x00000350
	ckmSHA3_256HMAC  = 0x000002B1
	ckmHKDFDerive    = 0x0000402A
	ckfHW            = 0x00000001
	ckfSign          = 0x00000800
	ckfUnwrap        = 0x00040000
	ckfWrap          = 0x00020000
)

var mechNames = map[uint]string{
	ckmSHA256HMAC:    "CKM_SHA256_HMAC",
	ckmSHA384HMAC:    "CKM_SHA384_HMAC",
	ckmAESKeyWrapPad: "CKM_AES_KEY_WRAP_PAD",
	ckmAESKeyWrap:    "CKM_AES_KEY_WRAP",
	ckmGenericKeyGen: "CKM_GENERIC_SECRET_KEY_GEN",
	ckmSHA3_256HMAC:  "CKM_SHA3_256_HMAC",
	ckmHKDFDerive:    "CKM_HKDF_DERIVE",
}

func mechName(m uint) string {
	if n, ok := mechNames[m]; ok {
		return n
	}
	return fmt.Sprintf("mechanism 0x%08x", m)
}

// MechInfo is what a token reports for one mechanism (C_GetMechanismInfo).
type MechInfo struct {
	MinKeySize, MaxKeySize uint
	Flags                  uint
}

// Mechanism is one mechanism pskvault looked for, and what it found.
type Mechanism struct {
	Name     string `json:"name"`
	Type     uint   `json:"type"`
	Purpose  string `json:"purpose"`
	Present  bool   `json:"present"`
	Hardware bool   `json:"hardware,omitempty"` // CKF_HW
	MinKey   uint   `json:"min_key_bytes,omitempty"`
	MaxKey   uint   `json:"max_key_bytes,omitempty"`
	Problem  string `json:"problem,omitempty"` // "" when usable
}

// Capabilities is what a token can do for pskvault.
type Capabilities struct {
	Mechanisms   []Mechanism       `json:"mechanisms"`
	Hashes       []importer.Hash   `json:"-"`                   // EPSK hashes whose keys the token can hold
	SelfTest     map[string]string `json:"self_test,omitempty"` // hash -> "ok" or why not
	UnwrapAESPad bool              `json:"wrapped_import"`      // CKM_AES_KEY_WRAP_PAD unwrap
	Problems     []string          `json:"problems,omitempty"`
	problemBy    map[uint]string
}

func (c Capabilities) problemFor(m uint) string {
	if p := c.problemBy[m]; p != "" {
		return p
	}
	return mechName(m) + ": not usable"
}

// needs is one mechanism pskvault wants: what for, which flag, which key
// size in bytes (0: any).
type need struct {
	mech    uint
	purpose string
	flag    uint
	keySize int
	hash    importer.Hash // 0 unless it is an HMAC mechanism
}

var needs = []need{
	{ckmSHA256HMAC, "HMAC for SHA-256 PSKs (C_Sign)", ckfSign, 32, importer.SHA256},
	{ckmSHA384HMAC, "HMAC for SHA-384 PSKs (C_Sign)", ckfSign, 48, importer.SHA384},
	{ckmAESKeyWrapPad, "wrapped import (C_UnwrapKey, RFC 5649)", ckfUnwrap, 0, 0},
}

// checkMechanisms evaluates a token's mechanism list against what pskvault
// needs. It is pure, so it can be tested with any mechanism list.
func checkMechanisms(have map[uint]MechInfo) Capabilities {
	c := Capabilities{problemBy: map[uint]string{}}
	for _, n := range needs {
		m := Mechanism{Name: mechName(n.mech), Type: n.mech, Purpose: n.purpose}
		info, ok := have[n.mech]
		m.Present = ok
		switch {
		case !ok:
			m.Problem = mechName(n.mech) + ": not offered by the token"
		default:
			m.Hardware = info.Flags&ckfHW != 0
			m.MinKey, m.MaxKey = info.MinKeySize, info.MaxKeySize
			switch {
			case info.Flags&n.flag == 0:
				m.Problem = fmt.Sprintf("%s: offered, but not for %s", mechName(n.mech), flagName(n.flag))
			case n.keySize > 0 && info.MaxKeySize != 0 && (uint(n.keySize) < info.MinKeySize || uint(n.keySize) > info.MaxKeySize):
				m.Problem = fmt.Sprintf("%s: key sizes %d..%d bytes exclude the %d-byte PRK", mechName(n.mech), info.MinKeySize, info.MaxKeySize, n.keySize)
			}
		}
		if m.Problem != "" {
			c.problemBy[n.mech] = m.Problem
			c.Problems = append(c.Problems, m.Problem)
		} else if n.hash != 0 {
			c.Hashes = append(c.Hashes, n.hash)
		} else if n.mech == ckmAESKeyWrapPad {
			c.UnwrapAESPad = true
		}
		c.Mechanisms = append(c.Mechanisms, m)
	}
	return c
}

func flagName(f uint) string {
	switch f {
	case ckfSign:
		return "C_Sign (CKF_SIGN)"
	case ckfUnwrap:
		return "C_UnwrapKey (CKF_UNWRAP)"
	case ckfWrap:
		return "C_WrapKey (CKF_WRAP)"
	}
	return fmt.Sprintf("flag 0x%x", f)
}

// Report is what Probe found out about a token.
type Report struct {
	Module   string       `json:"module"`
	Library  string       `json:"library"`
	Token    TokenReport  `json:"token"`
	Others   []string     `json:"other_tokens,omitempty"`
	LoggedIn bool         `json:"logged_in"`
	Caps     Capabilities `json:"capabilities"`
	Hashes   []string     `json:"hashes"`
	Usable   bool         `json:"usable"`
	Verdict  string       `json:"verdict"`
}

// TokenReport describes the selected token.
type TokenReport struct {
	Label             string   `json:"label"`
	Manufacturer      string   `json:"manufacturer"`
	Model             string   `json:"model"`
	Serial            string   `json:"serial"`
	Slot              uint     `json:"slot"`
	HardwareSlot      bool     `json:"hardware_slot"`
	LoginRequired     bool     `json:"login_required"`
	ProtectedAuthPath bool     `json:"protected_auth_path"`
	Flags             []string `json:"flags,omitempty"`
}

// String formats the report for a terminal.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "module:   %s\n", r.Module)
	fmt.Fprintf(&b, "library:  %s\n", r.Library)
	t := r.Token
	fmt.Fprintf(&b, "token:    %q (%s %s, serial %s, slot %d)\n", t.Label, t.Manufacturer, t.Model, t.Serial, t.Slot)
	if len(t.Flags) > 0 {
		fmt.Fprintf(&b, "flags:    %s\n", strings.Join(t.Flags, " "))
	}
	fmt.Fprintf(&b, "login:    %v\n", r.LoggedIn)
	for _, m := range r.Caps.Mechanisms {
		state := "ok"
		if m.Problem != "" {
			state = "MISSING: " + m.Problem
		}
		sizes := ""
		if m.Present && m.MaxKey != 0 {
			sizes = fmt.Sprintf(" keys %d..%d B", m.MinKey, m.MaxKey)
		}
		fmt.Fprintf(&b, "%-22s %-42s%s  %s\n", m.Name, m.Purpose, sizes, state)
	}
	for _, h := range []string{"sha256", "sha384"} {
		if v, ok := r.Caps.SelfTest[h]; ok {
			fmt.Fprintf(&b, "self-test %s: %s\n", h, v)
		}
	}
	fmt.Fprintf(&b, "verdict:  %s\n", r.Verdict)
	return b.String()
}
