// Package config reads pskvault's daemon configuration file: a strict
// subset of TOML (key = value, [tables], [[arrays of tables]], strings,
// integers, booleans, one-line arrays of strings, # comments). Every problem
// is reported with its line, unknown keys and duplicate keys included; no
// value silently defaults.
//
// A problem names the line and what is wrong, never what the line holds:
// the wrong file given as --config (a key file, a PIN file) must not end up
// on a terminal, in the log or in the audit log. Only the names of known
// keys and tables, which are this package's own words, are quoted.
package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pskvault/pskvault/vault"
)

// Config is the daemon's configuration. Zero values mean "not set".
type Config struct {
	NodeID         string // must match the vault's, when set
	Backend        string // must match the vault's, when set
	StateDir       string
	AdminSocket    string
	DataSocket     string
	AdminGroup     string
	AuditLog       string
	AuditFailure   string // "refuse" or "log"
	RequestTimeout time.Duration
	LogLevel       string
	MaxConns       int
	MaxConnsPerUID int
	Mlock          string
	MetricsListen  string           // host:port of the metrics listener
	Access         vault.AccessRule // [access]: default rule
	PSKs           []PSKRule        // [[psk]]
}

// PSKRule is one [[psk]] table: the access rule of one PSK.
type PSKRule struct {
	Identity []byte
	Rule     vault.AccessRule
	Line     int
}

// Problem is one error in the file.
type Problem struct {
	Line int
	Msg  string
}

func (p Problem) String() string { return fmt.Sprintf("line %d: %s", p.Line, p.Msg) }

// Error is every problem found in a file.
type Error struct {
	File     string
	Problems []Problem
}

// Lines are the problems as `pskvault config check` prints them, one
// "FILE:LINE: message" each.
func (e *Error) Lines() []string {
	out := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = fmt.Sprintf("%s:%d: %s", e.File, p.Line, p.Msg)
	}
	return out
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s:%d: %s", e.File, p.Line, p.Msg)
	}
	return b.String()
}

type value struct {
	line int
	str  *string
	num  *int64
	bool *bool
	list []string
	kind string // "string", "integer", "boolean", "array"
}

// Parse reads a configuration; file names it in errors. Principals (user
// and group names) are resolved through the system databases.
func Parse(file string, data []byte) (*Config, error) {
	p := &parser{cfg: &Config{}, seen: map[string]int{}}
	p.parse(data)
	if len(p.problems) > 0 {
		return nil, &Error{File: file, Problems: p.problems}
	}
	return p.cfg, nil
}

type parser struct {
	cfg      *Config
	problems []Problem
	section  string // "", "access", "psk"
	psk      *PSKRule
	pskSeen  map[string]int
	seen     map[string]int // key -> line, per section instance
}

func (p *parser) errorf(line int, format string, args ...any) {
	p.problems = append(p.problems, Problem{line, fmt.Sprintf(format, args...)})
}

func (p *parser) parse(data []byte) {
	identities := map[string]int{}
	for i, raw := range strings.Split(string(data), "\n") {
		line := i + 1
		s := strings.TrimSpace(stripComment(raw))
		if s == "" {
			continue
		}
		switch {
		case strings.HasPrefix(s, "[["):
			if !strings.HasSuffix(s, "]]") {
				p.errorf(line, "malformed table header (want [[psk]])")
				continue
			}
			p.endPSK(identities)
			name := strings.TrimSpace(s[2 : len(s)-2])
			if name != "psk" {
				p.errorf(line, "unknown array of tables (known: [[psk]])")
				p.section = "?"
				continue
			}
			p.section, p.psk, p.seen = "psk", &PSKRule{Line: line}, map[string]int{}
		case strings.HasPrefix(s, "["):
			if !strings.HasSuffix(s, "]") {
				p.errorf(line, "malformed table header (want [access] or [[psk]])")
				continue
			}
			p.endPSK(identities)
			name := strings.TrimSpace(s[1 : len(s)-1])
			if name != "access" {
				p.errorf(line, "unknown table (known: [access], [[psk]])")
				p.section = "?"
				continue
			}
			if p.pskSeen == nil {
				p.pskSeen = map[string]int{}
			}
			if l, dup := p.pskSeen["[access]"]; dup {
				p.errorf(line, "table [access] given twice (first on line %d)", l)
			}
			p.pskSeen["[access]"] = line
			p.section, p.seen = "access", map[string]int{}
		default:
			k, v, ok := strings.Cut(s, "=")
			if !ok {
				p.errorf(line, "want key = value, a [table] or a # comment")
				continue
			}
			key := strings.TrimSpace(k)
			if l, dup := p.seen[key]; dup {
				p.errorf(line, "%s given twice (first on line %d)", quotedKey(key), l)
				continue
			}
			p.seen[key] = line
			val, err := parseValue(strings.TrimSpace(v))
			if err != nil {
				p.errorf(line, "%s: %v", valueOf(key), err)
				continue
			}
			val.line = line
			p.set(key, val)
		}
	}
	p.endPSK(identities)
}

func (p *parser) endPSK(identities map[string]int) {
	if p.psk == nil {
		return
	}
	if p.psk.Identity == nil {
		p.errorf(p.psk.Line, "[[psk]] needs identity or identity_hex")
	} else if l, dup := identities[string(p.psk.Identity)]; dup {
		p.errorf(p.psk.Line, "a [[psk]] for this identity is already on line %d", l)
	} else {
		identities[string(p.psk.Identity)] = p.psk.Line
		p.cfg.PSKs = append(p.cfg.PSKs, *p.psk)
	}
	p.psk = nil
}

func (p *parser) set(key string, v value) {
	str := func(dst *string) {
		if v.kind != "string" {
			p.errorf(v.line, "%s: want a string, got %s", key, v.kind)
			return
		}
		*dst = *v.str
	}
	num := func(dst *int) {
		if v.kind != "integer" || *v.num <= 0 || *v.num > 1<<20 {
			p.errorf(v.line, "%s: want a positive integer", key)
			return
		}
		*dst = int(*v.num)
	}
	principals := func(dst *[]vault.Principal) {
		if v.kind != "array" {
			p.errorf(v.line, "%s: want an array of \"user:NAME\" / \"group:NAME\" strings, got %s", key, v.kind)
			return
		}
		for i, e := range v.list {
			pr, err := parsePrincipal(e)
			if err != nil {
				p.errorf(v.line, "%s: entry %d: %v", key, i+1, err)
				continue
			}
			*dst = append(*dst, pr)
		}
	}
	c := p.cfg
	switch p.section {
	case "?":
		return
	case "":
		switch key {
		case "node_id":
			str(&c.NodeID)
			if c.NodeID != "" {
				if err := vault.CheckNodeID(c.NodeID); err != nil {
					p.errorf(v.line, "node_id: want 1-64 characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit")
				}
			}
		case "backend":
			str(&c.Backend)
		case "state_dir":
			str(&c.StateDir)
		case "admin_socket":
			str(&c.AdminSocket)
		case "data_socket":
			str(&c.DataSocket)
		case "admin_group":
			str(&c.AdminGroup)
			if c.AdminGroup != "" {
				if _, err := vault.ParsePrincipal("group:" + c.AdminGroup); err != nil {
					p.errorf(v.line, "admin_group: no such group")
				}
			}
		case "audit_log":
			str(&c.AuditLog)
		case "request_timeout":
			var d string
			str(&d)
			if d != "" {
				t, err := time.ParseDuration(d)
				if err != nil || t <= 0 || t > time.Hour {
					p.errorf(v.line, "request_timeout: want a duration such as \"5s\" (up to 1h)")
				} else {
					c.RequestTimeout = t
				}
			}
		case "audit_failure":
			str(&c.AuditFailure)
			switch c.AuditFailure {
			case "refuse", "log":
			default:
				p.errorf(v.line, "audit_failure: want refuse or log")
			}
		case "log_level":
			str(&c.LogLevel)
			switch c.LogLevel {
			case "debug", "info", "warn", "error":
			default:
				p.errorf(v.line, "log_level: want debug, info, warn or error")
			}
		case "max_conns":
			num(&c.MaxConns)
		case "max_conns_per_uid":
			num(&c.MaxConnsPerUID)
		case "metrics_listen":
			str(&c.MetricsListen)
			if c.MetricsListen != "" {
				if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
					p.errorf(v.line, "metrics_listen: want host:port, e.g. \"127.0.0.1:9464\"")
				}
			}
		case "mlock":
			str(&c.Mlock)
			switch c.Mlock {
			case "auto", "require", "off":
			default:
				p.errorf(v.line, "mlock: want auto, require or off")
			}
		default:
			p.unknownKey(v.line, key, topKeys)
		}
	case "access":
		switch key {
		case "client":
			principals(&c.Access.Client)
		case "server":
			principals(&c.Access.Server)
		default:
			p.unknownKey(v.line, key, accessKeys)
		}
	case "psk":
		switch key {
		case "identity", "identity_hex":
			if p.psk.Identity != nil {
				p.errorf(v.line, "give identity or identity_hex, not both")
				return
			}
			var s string
			str(&s)
			if key == "identity" {
				p.psk.Identity = []byte(s)
			} else if b, err := hexDecode(s); err != nil || len(b) == 0 {
				p.errorf(v.line, "identity_hex: not a non-empty hex string")
			} else {
				p.psk.Identity = b
			}
		case "client":
			principals(&p.psk.Rule.Client)
		case "server":
			principals(&p.psk.Rule.Server)
		default:
			p.unknownKey(v.line, key, pskKeys)
		}
	}
}

func hexDecode(s string) ([]byte, error) {
	b := make([]byte, len(s)/2)
	if len(s)%2 != 0 {
		return nil, fmt.Errorf("odd length")
	}
	for i := range b {
		n, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, err
		}
		b[i] = byte(n)
	}
	return b, nil
}

// stripComment removes a # comment that is not inside a string.
func stripComment(s string) string {
	in, esc := false, false
	for i, c := range s {
		switch {
		case esc:
			esc = false
		case c == '\\' && in:
			esc = true
		case c == '"':
			in = !in
		case c == '#' && !in:
			return s[:i]
		}
	}
	return s
}

func parseValue(s string) (value, error) {
	switch {
	case s == "":
		return value{}, fmt.Errorf("missing value")
	case s == "true" || s == "false":
		b := s == "true"
		return value{bool: &b, kind: "boolean"}, nil
	case s[0] == '"':
		str, rest, err := parseString(s)
		if err != nil {
			return value{}, err
		}
		if strings.TrimSpace(rest) != "" {
			return value{}, fmt.Errorf("unexpected text after the closing quote")
		}
		return value{str: &str, kind: "string"}, nil
	case s[0] == '[':
		if !strings.HasSuffix(s, "]") {
			return value{}, fmt.Errorf("arrays must open and close on one line")
		}
		body := strings.TrimSpace(s[1 : len(s)-1])
		list := []string{}
		for body != "" {
			if body[0] != '"' {
				return value{}, fmt.Errorf("arrays hold strings only")
			}
			str, rest, err := parseString(body)
			if err != nil {
				return value{}, err
			}
			list = append(list, str)
			rest = strings.TrimSpace(rest)
			if rest == "" {
				break
			}
			if rest[0] != ',' {
				return value{}, fmt.Errorf("want , between array elements")
			}
			body = strings.TrimSpace(rest[1:])
		}
		return value{list: list, kind: "array"}, nil
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
	if err != nil {
		return value{}, fmt.Errorf("unsupported value (strings need double quotes)")
	}
	return value{num: &n, kind: "integer"}, nil
}

// parseString reads a TOML basic string at the start of s.
func parseString(s string) (string, string, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), s[i+1:], nil
		case c == '\\':
			if i+1 >= len(s) {
				return "", "", fmt.Errorf("unterminated string")
			}
			i++
			switch s[i] {
			case '"', '\\':
				b.WriteByte(s[i])
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				return "", "", fmt.Errorf("unsupported escape (known: \\\" \\\\ \\n \\t)")
			}
		case c < 0x20:
			return "", "", fmt.Errorf("control character in string")
		default:
			b.WriteByte(c)
		}
	}
	return "", "", fmt.Errorf("unterminated string")
}

// The keys each section knows: the only words of the file that problems
// quote.
var (
	topKeys    = []string{"node_id", "backend", "state_dir", "admin_socket", "data_socket", "admin_group", "audit_log", "log_level", "max_conns", "max_conns_per_uid", "mlock", "metrics_listen"}
	accessKeys = []string{"client", "server"}
	pskKeys    = []string{"identity", "identity_hex", "client", "server"}
)

func known(key string) bool {
	for _, l := range [][]string{topKeys, accessKeys, pskKeys} {
		for _, k := range l {
			if k == key {
				return true
			}
		}
	}
	return false
}

// quotedKey quotes key when it is one of the file's known keys, and says
// "a key" otherwise: an unknown key may be anything, a secret included.
func quotedKey(key string) string {
	if known(key) {
		return fmt.Sprintf("key %q", key)
	}
	return "a key"
}

// valueOf names the value of key in a problem with it.
func valueOf(key string) string {
	if known(key) {
		return key
	}
	return "the value of an unknown key"
}

// unknownKey reports a key the section does not know, without repeating
// it, and suggests the known key it is closest to (a typo) when there is
// one within two edits.
func (p *parser) unknownKey(line int, key string, known []string) {
	where := ""
	switch p.section {
	case "access":
		where = " in [access]"
	case "psk":
		where = " in [[psk]]"
	}
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(key, k, bestD); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		p.errorf(line, "unknown key%s (not repeated here); did you mean %q?", where, best)
		return
	}
	p.errorf(line, "unknown key%s (not repeated here; known: %s)", where, strings.Join(known, ", "))
}

// editDistance is the Levenshtein distance of a and b, or max when it is
// max or more (long inputs stop early).
func editDistance(a, b string, max int) int {
	if d := len(a) - len(b); d >= max || -d >= max {
		return max
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		low := cur[0]
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			c = min(c, prev[j]+1, cur[j-1]+1)
			cur[j] = c
			low = min(low, c)
		}
		if low >= max {
			return max
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], max)
}

// parsePrincipal is vault.ParsePrincipal with errors that do not repeat
// the entry.
func parsePrincipal(e string) (vault.Principal, error) {
	kind, name, ok := strings.Cut(e, ":")
	if !ok || name == "" || (kind != "user" && kind != "group") {
		return vault.Principal{}, fmt.Errorf("want user:NAME, user:UID, group:NAME or group:GID")
	}
	pr, err := vault.ParsePrincipal(e)
	if err != nil {
		if n, nerr := strconv.ParseUint(name, 10, 32); nerr == nil && n == 1<<32-1 {
			return vault.Principal{}, fmt.Errorf("id 4294967295 is reserved (it stands for a caller whose credentials are unknown)")
		}
		return vault.Principal{}, fmt.Errorf("no such %s", kind)
	}
	return pr, nil
}
