package pkcs11

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrBadURI reports a PKCS#11 URI that does not parse or that names an
// attribute pskvault does not use. Nothing in a URI is ever defaulted or
// ignored: a misspelt attribute is an error, not a silently wider match.
var ErrBadURI = errors.New("bad PKCS#11 URI")

// URI is a parsed RFC 7512 PKCS#11 URI as pskvault uses it.
//
// Path attributes select the token (token, manufacturer, model, serial,
// slot-id) and, optionally, the default wrapping key for wrapped imports
// (object = its CKA_LABEL, id = its CKA_ID, type = secret-key).
// Query attributes say how to reach it: module-path (required),
// pin-source (file:/path, an absolute path, or credential:NAME for a
// systemd credential; absent for a token with a PIN pad or none) and the
// vendor attribute x-sessions (session pool size, 1..64, default 8).
// pin-value is refused: a PIN does not belong in a URI.
type URI struct {
	Token        string // CKA token label
	Manufacturer string
	Model        string
	Serial       string
	SlotID       *uint // nil when not given

	Object string // default wrapping key's CKA_LABEL
	ID     []byte // default wrapping key's CKA_ID
	Type   string // only "secret-key" is accepted

	ModulePath string
	PINSource  string // "" (no PIN), "file:/abs", "credential:NAME", "prompt"
	Sessions   int    // 0 = default
}

// DefaultSessions is the session pool size when x-sessions is not given.
const DefaultSessions = 8

// MaxSessions bounds x-sessions.
const MaxSessions = 64

const uriScheme = "pkcs11:"

// RFC 7512 section 2.3 character classes.
const (
	unreservedChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
	resAvail        = ":[]@!$'()*+,="
	pathChars       = unreservedChars + resAvail + "&"
	queryChars      = unreservedChars + resAvail + "/?|"
)

// ParseURI strictly parses an RFC 7512 PKCS#11 URI. Values are
// percent-decoded; an invalid escape, a character RFC 7512 does not allow
// unescaped, a repeated attribute or an attribute pskvault does not know is
// an error wrapping ErrBadURI.
func ParseURI(s string) (*URI, error) {
	if len(s) < len(uriScheme) || !strings.EqualFold(s[:len(uriScheme)], uriScheme) {
		return nil, fmt.Errorf("%w: must start with %q", ErrBadURI, uriScheme)
	}
	rest := s[len(uriScheme):]
	path, query, hasQuery := strings.Cut(rest, "?")
	if strings.Contains(path, "#") || strings.Contains(query, "#") {
		return nil, fmt.Errorf("%w: fragments (#) are not allowed", ErrBadURI)
	}
	u := &URI{}
	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			name, val, err := splitAttr(attr, pathChars, "path")
			if err != nil {
				return nil, err
			}
			if seen[name] {
				return nil, fmt.Errorf("%w: attribute %q given twice", ErrBadURI, name)
			}
			seen[name] = true
			if err := u.setPath(name, val, attr); err != nil {
				return nil, err
			}
		}
	}
	if hasQuery {
		if query == "" {
			return nil, fmt.Errorf("%w: empty query after '?'", ErrBadURI)
		}
		for _, attr := range strings.Split(query, "&") {
			name, val, err := splitAttr(attr, queryChars, "query")
			if err != nil {
				return nil, err
			}
			if seen[name] {
				return nil, fmt.Errorf("%w: attribute %q given twice", ErrBadURI, name)
			}
			seen[name] = true
			if err := u.setQuery(name, val); err != nil {
				return nil, err
			}
		}
	}
	if u.ModulePath == "" {
		return nil, fmt.Errorf("%w: module-path is required (for example module-path=/usr/lib/softhsm/libsofthsm2.so)", ErrBadURI)
	}
	if u.Token == "" && u.Serial == "" && u.SlotID == nil {
		return nil, fmt.Errorf("%w: name the token with token=LABEL (or serial=, slot-id=)", ErrBadURI)
	}
	return u, nil
}

func splitAttr(attr, allowed, where string) (name, val string, err error) {
	if attr == "" {
		return "", "", fmt.Errorf("%w: empty %s attribute", ErrBadURI, where)
	}
	name, raw, ok := strings.Cut(attr, "=")
	if !ok {
		return "", "", fmt.Errorf("%w: %s attribute %q has no '='", ErrBadURI, where, truncate(attr))
	}
	if name == "" {
		return "", "", fmt.Errorf("%w: %s attribute with an empty name", ErrBadURI, where)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return "", "", fmt.Errorf("%w: attribute name %q: only lowercase letters, digits and '-'", ErrBadURI, truncate(name))
		}
	}
	val, err = pctDecode(raw, allowed)
	if err != nil {
		return "", "", fmt.Errorf("%w: attribute %q: %v", ErrBadURI, name, err)
	}
	return name, val, nil
}

func pctDecode(s, allowed string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) {
				return "", errors.New("truncated percent escape")
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", errors.New("invalid percent escape")
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
			continue
		}
		if strings.IndexByte(allowed, c) < 0 {
			return "", fmt.Errorf("character %q must be percent-encoded", c)
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func (u *URI) setPath(name, val, raw string) error {
	switch name {
	case "token":
		u.Token = val
	case "manufacturer":
		u.Manufacturer = val
	case "model":
		u.Model = val
	case "serial":
		u.Serial = val
	case "slot-id":
		if val == "" || strings.TrimLeft(val, "0123456789") != "" {
			return fmt.Errorf("%w: slot-id must be decimal digits", ErrBadURI)
		}
		n, err := strconv.ParseUint(val, 10, 64)
		if err != nil || uint64(uint(n)) != n {
			return fmt.Errorf("%w: slot-id out of range", ErrBadURI)
		}
		v := uint(n)
		u.SlotID = &v
	case "object":
		u.Object = val
	case "id":
		// RFC 7512: the id value is entirely percent-encoded bytes.
		_, enc, _ := strings.Cut(raw, "=")
		if len(enc)%3 != 0 {
			return fmt.Errorf("%w: id must be percent-encoded bytes (%%xx%%yy...)", ErrBadURI)
		}
		for i := 0; i < len(enc); i += 3 {
			if enc[i] != '%' {
				return fmt.Errorf("%w: id must be percent-encoded bytes (%%xx%%yy...)", ErrBadURI)
			}
		}
		if val == "" {
			return fmt.Errorf("%w: id is empty", ErrBadURI)
		}
		u.ID = []byte(val)
	case "type":
		if val != "secret-key" {
			return fmt.Errorf("%w: type=%q: pskvault only uses secret-key objects", ErrBadURI, truncate(val))
		}
		u.Type = val
	case "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer":
		return fmt.Errorf("%w: attribute %q is not supported; select the library with module-path and the token with token=, serial= or slot-id=", ErrBadURI, name)
	default:
		return fmt.Errorf("%w: unknown path attribute %q", ErrBadURI, truncate(name))
	}
	return nil
}

func (u *URI) setQuery(name, val string) error {
	switch name {
	case "module-path":
		if !filepath.IsAbs(val) {
			return fmt.Errorf("%w: module-path must be an absolute path", ErrBadURI)
		}
		if strings.IndexByte(val, 0) >= 0 {
			return fmt.Errorf("%w: module-path contains a NUL byte", ErrBadURI)
		}
		u.ModulePath = val
	case "pin-source":
		src, err := normalizePINSource(val)
		if err != nil {
			return err
		}
		u.PINSource = src
	case "pin-value":
		return fmt.Errorf("%w: pin-value is refused: a PIN in a URI ends up in shell history, argv and logs; put it in a 0600 file and use pin-source=file:/path, or a systemd credential with pin-source=credential:NAME", ErrBadURI)
	case "module-name":
		return fmt.Errorf("%w: module-name is not supported; give the library with module-path=/absolute/path.so", ErrBadURI)
	case "x-sessions":
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 || n > MaxSessions || strconv.Itoa(n) != val {
			return fmt.Errorf("%w: x-sessions must be a number from 1 to %d", ErrBadURI, MaxSessions)
		}
		u.Sessions = n
	default:
		return fmt.Errorf("%w: unknown query attribute %q", ErrBadURI, truncate(name))
	}
	return nil
}

// normalizePINSource returns "file:/abs/path", "credential:NAME" or "prompt".
func normalizePINSource(v string) (string, error) {
	switch {
	case strings.HasPrefix(v, "file://"):
		p := strings.TrimPrefix(v, "file://")
		if !strings.HasPrefix(p, "/") {
			return "", fmt.Errorf("%w: pin-source file URI must be file:/absolute/path or file:///absolute/path", ErrBadURI)
		}
		return checkPINPath(p)
	case strings.HasPrefix(v, "file:"):
		return checkPINPath(strings.TrimPrefix(v, "file:"))
	case strings.HasPrefix(v, "/"):
		return checkPINPath(v)
	case strings.HasPrefix(v, "credential:"):
		name := strings.TrimPrefix(v, "credential:")
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return "", fmt.Errorf("%w: pin-source credential name must be a plain file name", ErrBadURI)
		}
		return "credential:" + name, nil
	case v == "prompt":
		return "prompt", nil
	case strings.HasPrefix(v, "|"):
		return "", fmt.Errorf("%w: pin-source commands (|...) are not supported; use file: or credential:", ErrBadURI)
	}
	return "", fmt.Errorf("%w: pin-source must be file:/absolute/path, credential:NAME or prompt", ErrBadURI)
}

func checkPINPath(p string) (string, error) {
	if !filepath.IsAbs(p) || strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("%w: pin-source file must be an absolute path", ErrBadURI)
	}
	return "file:" + p, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// pctEncode escapes every byte outside allowed.
func pctEncode(s, allowed string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if strings.IndexByte(allowed, c) >= 0 && c != '%' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// String returns the URI in canonical form; ParseURI(u.String()) gives u back.
func (u *URI) String() string {
	// Path values must not contain ';' or '?' unescaped; '&' is allowed.
	pathAllowed := strings.NewReplacer(";", "", "?", "").Replace(pathChars)
	var path []string
	add := func(k, v string) {
		if v != "" {
			path = append(path, k+"="+pctEncode(v, pathAllowed))
		}
	}
	add("token", u.Token)
	add("manufacturer", u.Manufacturer)
	add("model", u.Model)
	add("serial", u.Serial)
	if u.SlotID != nil {
		path = append(path, "slot-id="+strconv.FormatUint(uint64(*u.SlotID), 10))
	}
	add("object", u.Object)
	if len(u.ID) > 0 {
		path = append(path, "id="+pctEncode(string(u.ID), ""))
	}
	add("type", u.Type)
	queryAllowed := strings.NewReplacer("&", "", "#", "").Replace(queryChars)
	q := map[string]string{"module-path": u.ModulePath}
	if u.PINSource != "" {
		q["pin-source"] = u.PINSource
	}
	if u.Sessions != 0 {
		q["x-sessions"] = strconv.Itoa(u.Sessions)
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var query []string
	for _, k := range keys {
		query = append(query, k+"="+pctEncode(q[k], queryAllowed))
	}
	return uriScheme + strings.Join(path, ";") + "?" + strings.Join(query, "&")
}

// sessions is the pool size to use.
func (u *URI) sessions() int {
	if u.Sessions == 0 {
		return DefaultSessions
	}
	return u.Sessions
}
