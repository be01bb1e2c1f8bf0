// Package agent keeps key files for TLS software that reads its PSKs from
// a file (stunnel PSKsecrets, GnuTLS psk password files, mosquitto
// psk_file, JSON for anything else), in the spirit of Vault Agent's
// templates: it takes the keys from a pskvault daemon's data socket as its
// own user, writes each file atomically, and rewrites it and runs the
// consumer's reload command within a second of any change, through the
// daemon's watch endpoint (docs/API.md, POST /v1/watch).
package agent

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// ErrConfig is every problem with an agent configuration.
var ErrConfig = errors.New("agent configuration")

// MaxConfig bounds the configuration file.
const MaxConfig = 1 << 20

// Config is the agent's configuration file (JSON, strict: unknown fields
// are errors).
type Config struct {
	// DataSocket is the daemon's data socket.
	DataSocket string `json:"data_socket"`
	// DaemonUID, when set, is trusted as the daemon's uid besides root,
	// the agent's own uid and the pskvault system user.
	DaemonUID *uint32  `json:"daemon_uid,omitempty"`
	Outputs   []Output `json:"outputs"`
}

// Output is one file the agent keeps.
type Output struct {
	Path   string `json:"path"`   // absolute
	Format string `json:"format"` // stunnel, gnutls, mosquitto, json
	// Role is this node's role in the PSKs written: "server" (every
	// client the consumer accepts) or "client" (the servers it talks to;
	// newest generation first, which is what stunnel's client uses).
	Role string `json:"role"`
	// Peer, when set, keeps only PSKs shared with that node (required for
	// group PSKs).
	Peer string `json:"peer,omitempty"`
	// Identities / IdentitiesHex, when set, keep only these PSKs and the
	// generations rotated from them (followed while a link in the chain is
	// still listed).
	Identities    []string `json:"identities,omitempty"`
	IdentitiesHex []string `json:"identities_hex,omitempty"`
	// Protocol and KDF are the target (default tls1.3, sha256).
	Protocol string `json:"protocol,omitempty"`
	KDF      string `json:"kdf,omitempty"`
	// ContextHex is the RFC 9258 context (public).
	ContextHex string `json:"context_hex,omitempty"`
	// IdentityForm is how the ImportedIdentity is written where the format
	// allows a choice (gnutls): "bytes" (default: GnuTLS's #HEX username,
	// the raw bytes on the wire) or "hex-text" (the hex digits are the
	// identity, as stunnel and the command-line tools send it).
	IdentityForm string `json:"identity_form,omitempty"`
	// Owner, Group: names or numeric ids (default: the agent's own);
	// Mode: octal string, default "0600".
	Owner string `json:"owner,omitempty"`
	Group string `json:"group,omitempty"`
	Mode  string `json:"mode,omitempty"`
	// Reload is the command run after each rewrite (argv, no shell);
	// ReloadUnit is short for systemctl reload UNIT. At most one.
	Reload     []string `json:"reload,omitempty"`
	ReloadUnit string   `json:"reload_unit,omitempty"`

	// Filled in by ParseConfig.
	target   vault.Target
	context  []byte
	ids      map[string]bool
	uid, gid int
	mode     os.FileMode
	argv     []string
}

// Formats the agent writes.
var Formats = []string{"stunnel", "gnutls", "mosquitto", "json"}

// ParseConfig reads and checks a configuration; every problem is reported
// at once, with the output it belongs to.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > MaxConfig {
		return nil, fmt.Errorf("%w: over %d bytes", ErrConfig, MaxConfig)
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrConfig, jsonProblem(data, dec, err))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the object", ErrConfig)
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
	}
	if !filepath.IsAbs(c.DataSocket) {
		bad("data_socket: want an absolute path")
	}
	if len(c.Outputs) == 0 {
		bad("outputs: none")
	}
	paths := map[string]bool{}
	for i := range c.Outputs {
		o := &c.Outputs[i]
		name := fmt.Sprintf("outputs[%d]", i)
		if err := o.check(); err != nil {
			bad("%s (%s): %v", name, o.Path, err)
			continue
		}
		if paths[o.Path] {
			bad("%s: path %s given twice", name, o.Path)
		}
		paths[o.Path] = true
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &c, nil
}

func (o *Output) check() error {
	if !filepath.IsAbs(o.Path) || filepath.Clean(o.Path) != o.Path || strings.HasSuffix(o.Path, "/") {
		return errors.New("path: want a clean absolute file path")
	}
	if !contains(Formats, o.Format) {
		return fmt.Errorf("format: want one of %s", strings.Join(Formats, ", "))
	}
	if o.Role != "client" && o.Role != "server" {
		return errors.New("role: want client or server")
	}
	if o.Peer != "" {
		if err := vault.CheckNodeID(o.Peer); err != nil {
			return fmt.Errorf("peer: %w", err)
		}
	}
	o.ids = map[string]bool{}
	for _, id := range o.Identities {
		if id == "" {
			return errors.New("identities: empty identity")
		}
		o.ids[id] = true
	}
	for _, h := range o.IdentitiesHex {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) == 0 {
			return errors.New("identities_hex: an entry is not a non-empty hex string")
		}
		o.ids[string(b)] = true
	}
	var err error
	if o.Protocol == "" {
		o.Protocol = "tls1.3"
	}
	if o.KDF == "" {
		o.KDF = "sha256"
	}
	if o.target.Protocol, err = importer.ParseProtocol(o.Protocol); err != nil {
		return errors.New("protocol: want tls1.3 or dtls1.3")
	}
	if o.target.KDF, err = importer.ParseKDF(o.KDF); err != nil {
		return errors.New("kdf: want sha256 or sha384")
	}
	if o.context, err = hex.DecodeString(o.ContextHex); err != nil {
		return errors.New("context_hex: not hex")
	}
	switch o.IdentityForm {
	case "":
		o.IdentityForm = "hex-text"
		if o.Format == "gnutls" {
			o.IdentityForm = "bytes"
		}
	case "hex-text":
	case "bytes":
		if o.Format != "gnutls" && o.Format != "json" {
			return fmt.Errorf("identity_form bytes: %s files cannot carry binary identities (hex-text only)", o.Format)
		}
	default:
		return errors.New("identity_form: want bytes or hex-text")
	}
	o.uid, o.gid = os.Geteuid(), os.Getegid()
	if o.Owner != "" {
		if o.uid, err = lookupID(o.Owner, true); err != nil {
			return err
		}
	}
	if o.Group != "" {
		if o.gid, err = lookupID(o.Group, false); err != nil {
			return err
		}
	}
	o.mode = 0o600
	if o.Mode != "" {
		m, err := strconv.ParseUint(o.Mode, 8, 32)
		if err != nil || m&^0o777 != 0 {
			return errors.New("mode: want octal permission bits, e.g. 0640")
		}
		if m&0o007 != 0 {
			return fmt.Errorf("mode %s: the file holds keys; no access for others", o.Mode)
		}
		o.mode = os.FileMode(m)
	}
	switch {
	case len(o.Reload) > 0 && o.ReloadUnit != "":
		return errors.New("give reload or reload_unit, not both")
	case len(o.Reload) > 0:
		if !filepath.IsAbs(o.Reload[0]) {
			return errors.New("reload: the command must be an absolute path (argv, no shell)")
		}
		o.argv = o.Reload
	case o.ReloadUnit != "":
		if strings.ContainsAny(o.ReloadUnit, " /\n") || strings.HasPrefix(o.ReloadUnit, "-") {
			return errors.New("reload_unit: not a unit name")
		}
		o.argv = []string{"systemctl", "reload", "--", o.ReloadUnit}
	}
	return nil
}

func lookupID(s string, isUser bool) (int, error) {
	if n, err := strconv.ParseUint(s, 10, 31); err == nil {
		return int(n), nil
	}
	var id string
	if isUser {
		u, err := user.Lookup(s)
		if err != nil {
			return 0, errors.New("owner: no such user")
		}
		id = u.Uid
	} else {
		g, err := user.LookupGroup(s)
		if err != nil {
			return 0, errors.New("group: no such group")
		}
		id = g.Gid
	}
	n, err := strconv.Atoi(id)
	return n, err
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// jsonProblem describes a JSON decoding error by line and kind only. The
// decoder's own messages quote the file (an offending character, an unknown
// field's name), and a key file given as the configuration by mistake must
// not reach the terminal or a log through them.
func jsonProblem(data []byte, dec *json.Decoder, err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("line %d: not valid JSON", lineAt(data, syn.Offset))
	case errors.As(err, &typ):
		return fmt.Sprintf("line %d: %s: wrong type, want %s", lineAt(data, typ.Offset), typ.Field, typ.Type)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the file ends inside the JSON object"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Sprintf("line %d: unknown field", lineAt(data, dec.InputOffset()))
	}
	return "not a valid configuration object"
}

func lineAt(data []byte, off int64) int {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return 1 + bytes.Count(data[:off], []byte("\n"))
}
