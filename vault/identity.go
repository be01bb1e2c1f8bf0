package vault

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"net"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mtibben/confusables"
	"golang.org/x/text/unicode/norm"
)

// Finding levels, from worst to mildest.
const (
	LevelMust   = "MUST"   // an RFC 9257 MUST is violated
	LevelShould = "SHOULD" // an RFC 9257 SHOULD (or recommendation) is not met
	LevelWarn   = "warn"   // risky, allowed
	LevelInfo   = "info"
	// LevelError is not about RFC 9257: the record and the backend
	// disagree (a key missing, a delete unfinished), so the PSK cannot be
	// used as recorded. check exits 1 on it, like on a MUST.
	LevelError = "error"
)

// Finding is one observation about a PSK, tied to the RFC 9257 section it
// comes from. It never contains key material.
type Finding struct {
	Rule    string `json:"rule"`    // stable name, e.g. "identity-nfc"
	Section string `json:"section"` // RFC 9257 section, e.g. "6.1.1"
	Level   string `json:"level"`
	Message string `json:"message"`
}

func (f Finding) String() string {
	return fmt.Sprintf("%s (RFC 9257 section %s, %s)", f.Message, f.Section, f.Level)
}

// RandomIdentityPrefix starts every identity the vault generates.
//
// Generated identities are "pskv1-" followed by 26 characters of lowercase
// base32 (RFC 4648 alphabet, no padding) holding 128 random bits: 32
// printable ASCII bytes. They are unique, opaque and say nothing about the
// nodes (RFC 9257 section 7).
//
// What goes on the wire is not this identity but an RFC 9258
// ImportedIdentity built from it (native importers send the struct; stacks
// fed by pskvault without an importer send its hex as a plain identity).
// Nothing in that encoding keeps it apart from a stack's resumption
// identities (RFC 9257 section 6.1.2): the struct starts with the
// identity's 16-bit length, whose first byte is zero only for identities
// under 256 bytes, and a ticket starts with a zero byte one time in 256
// anyway; the hex form starts with ASCII digits. What makes a collision
// improbable is that tickets are long random-looking strings (key name or
// IV, ciphertext, MAC) chosen by the stack; what would rule it out is the
// stack tagging its resumption identities, which RFC 9257 section 6.1.2
// recommends to stacks and pskvault cannot do for them.
const RandomIdentityPrefix = "pskv1-"

var randomIdentityRe = regexp.MustCompile(`^pskv1-[a-z2-7]{26}$`)

// RandomIdentity returns a new random opaque identity (see
// RandomIdentityPrefix). It reveals nothing about the nodes (RFC 9257
// section 7).
func RandomIdentity() ([]byte, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("OS RNG: %w", err)
	}
	enc := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
	return []byte(RandomIdentityPrefix + strings.ToLower(enc)), nil
}

// IsRandomIdentity reports whether id has the shape RandomIdentity gives.
func IsRandomIdentity(id []byte) bool { return randomIdentityRe.Match(id) }

// CheckIdentity applies the identity rules to id, given the identities the
// vault already holds. The rule (docs/RFC9257.md, "Identities"):
//
//   - Identities are opaque bytes, compared byte by byte (section 6.1.1);
//     identities that are not UTF-8 get no text checks.
//   - Refused outright: ASCII/C1 control characters (they corrupt configs
//     and logs), and a text identity whose Unicode skeleton (UTS #39) equals
//     that of an identity already held (section 6.1.1: "visually identical
//     strings may, in fact, differ"; an operator cannot tell them apart,
//     and a stack that normalizes would collide).
//   - Refused unless waived (AllowIdentityWarnings), then recorded: not NFC,
//     invisible or format characters, leading or trailing white space
//     (section 6.1.1: peers typing "the same" identity send different
//     bytes).
//   - Warned and recorded: mixed scripts (section 6.1.1), and identities
//     that reveal names or addresses (hostnames, domain names, e-mail, MAC
//     or IP addresses), which travel in clear text (section 7).
//
// It returns the findings to record and, separately, those that refuse.
func CheckIdentity(id []byte, existing [][]byte, allowWarnings bool) (record []Finding, err error) {
	return checkIdentity(id, newSkeletons(existing), allowWarnings)
}

// skeletons indexes text identities by their UTS #39 skeleton.
type skeletons map[string][][]byte

func newSkeletons(ids [][]byte) skeletons {
	s := skeletons{}
	for _, e := range ids {
		if k, ok := skeletonOf(e); ok {
			s[k] = append(s[k], e)
		}
	}
	return s
}

// skeletonOf is the UTS #39 skeleton of a text identity; ok is false for a
// binary one (not UTF-8), which gets no text checks.
func skeletonOf(id []byte) (string, bool) {
	if !utf8.Valid(id) {
		return "", false
	}
	return confusables.Skeleton(string(id)), true
}

func checkIdentity(id []byte, known skeletons, allowWarnings bool) (record []Finding, err error) {
	if !utf8.Valid(id) {
		return []Finding{{"identity-binary", "6.1.1", LevelInfo, "binary identity: compared as opaque bytes"}}, nil
	}
	s := string(id)
	var hard, soft []Finding
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) }) >= 0 {
		hard = append(hard, Finding{"identity-control", "6.1.1", LevelShould, "identity contains control characters"})
	}
	for _, e := range known[confusables.Skeleton(s)] {
		if !bytes.Equal(e, id) {
			hard = append(hard, Finding{"identity-confusable", "6.1.1", LevelShould,
				fmt.Sprintf("identity is visually confusable with identity %x already in the vault", e)})
		}
	}
	if !norm.NFC.IsNormalString(s) {
		soft = append(soft, Finding{"identity-nfc", "6.1.1", LevelShould, "identity is not in Unicode NFC form: a peer typing the same text may send different bytes"})
	}
	if strings.IndexFunc(s, invisible) >= 0 {
		soft = append(soft, Finding{"identity-invisible", "6.1.1", LevelShould, "identity contains invisible or format characters (e.g. zero-width space, soft hyphen, byte-order mark)"})
	}
	if strings.TrimSpace(s) != s || strings.TrimFunc(s, unicode.IsSpace) != s {
		soft = append(soft, Finding{"identity-space", "6.1.1", LevelShould, "identity has leading or trailing white space"})
	}
	var warn []Finding
	if scripts := scriptsOf(s); len(scripts) > 1 {
		warn = append(warn, Finding{"identity-mixed-scripts", "6.1.1", LevelWarn, "identity mixes scripts: " + strings.Join(scripts, ", ")})
	}
	if what := privacyRevealing(s); what != "" {
		warn = append(warn, Finding{"identity-privacy", "7", LevelWarn, "identity looks like " + what + ": identities travel in clear text and reveal it to observers (consider --random-identity)"})
	}
	record = append(append(record, soft...), warn...)
	if len(hard) > 0 || (len(soft) > 0 && !allowWarnings) {
		refused := append(hard, soft...)
		msgs := make([]string, len(refused))
		for i, f := range refused {
			msgs[i] = f.String()
		}
		hint := ""
		if len(hard) == 0 {
			hint = " (allow with --allow-identity-warnings)"
		}
		return nil, fmt.Errorf("%w: %s%s", ErrIdentity, strings.Join(msgs, "; "), hint)
	}
	return record, nil
}

// invisible reports format characters and other default-ignorable code
// points that render as nothing.
func invisible(r rune) bool {
	if unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Variation_Selector, r) {
		return true
	}
	switch r {
	case 0x115F, 0x1160, 0x3164, 0xFFA0, 0x034F, 0x17B4, 0x17B5, 0x2800:
		return true
	}
	return false
}

// scriptsOf lists the scripts in s, ignoring Common and Inherited
// (digits, punctuation, combining marks).
func scriptsOf(s string) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range s {
		if r < utf8.RuneSelf {
			// ASCII: letters are Latin, the rest Common (a lookup in
			// every script table per character was most of an import's
			// CPU time).
			if ('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') && !seen["Latin"] {
				seen["Latin"] = true
				out = append(out, "Latin")
			}
			continue
		}
		for name, tab := range unicode.Scripts {
			if name == "Common" || name == "Inherited" {
				continue
			}
			if unicode.Is(tab, r) {
				if !seen[name] {
					seen[name] = true
					out = append(out, name)
				}
				break
			}
		}
	}
	return out
}

var (
	macRe    = regexp.MustCompile(`(?i)(^|[^0-9a-f])([0-9a-f]{2}[:-]){5}[0-9a-f]{2}([^0-9a-f]|$)|(?i)(^|[^0-9a-f])([0-9a-f]{4}\.){2}[0-9a-f]{4}([^0-9a-f]|$)`)
	emailRe  = regexp.MustCompile(`[^@\s]+@[^@\s]+\.[A-Za-z]{2,}`)
	domainRe = regexp.MustCompile(`(?i)(^|[^a-z0-9-])([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?([^a-z0-9-]|$)`)
	ipv4Re   = regexp.MustCompile(`(^|[^0-9.])(\d{1,3}\.){3}\d{1,3}([^0-9.]|$)`)
)

// privacyRevealing names what kind of identifying data s seems to hold.
func privacyRevealing(s string) string {
	switch {
	case emailRe.MatchString(s):
		return "an e-mail address"
	case macRe.MatchString(s):
		return "a MAC address"
	case ipv4Re.MatchString(s):
		return "an IPv4 address"
	case strings.Count(s, ":") >= 2 && looksIPv6(s):
		return "an IPv6 address"
	case domainRe.MatchString(s):
		return "a hostname or domain name"
	}
	return ""
}

func looksIPv6(s string) bool {
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '/' || r == '_' || r == '@' }) {
		if ip := net.ParseIP(strings.Trim(f, "[]")); ip != nil {
			return true
		}
	}
	return false
}
