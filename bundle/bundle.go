// Package bundle reads and writes pskvault provisioning bundles: one PSK's
// policy and key, for one node, authenticated with a MAC under a key
// derived from the EPSK (docs/BUNDLE.md is the format's specification).
//
// A bundle is text, one "name: value" line per field in a fixed order.
// Every line but the key and the MAC is authenticated; the key is
// authenticated by the MAC key, which is derived from it. So editing any
// byte of the policy, or swapping the key, makes the MAC fail.
package bundle

import (
	"bytes"
	"crypto/hmac"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// Magic is a version 1 bundle's first line.
const Magic = "pskvault-bundle 1"

// MaxSize bounds a bundle file a reader accepts.
const MaxSize = 512 << 10

// Key kinds.
const (
	KeyClear  = "clear"  // the EPSK, hex
	KeyTPM    = "tpm"    // the PRK wrapped to the node's TPM storage parent (pskvault wrap --tpm-parent-pub), base64
	KeyPKCS11 = "pkcs11" // the PRK wrapped under the node's PKCS#11 AES key-encryption key, base64
)

// ErrFormat reports a bundle that does not parse.
var ErrFormat = errors.New("not a valid pskvault bundle")

// Bundle is one PSK for one node.
type Bundle struct {
	ForNode     string // the node that must import it
	Identity    []byte
	Client      string // empty for a group PSK
	Server      string
	Group       []string
	NodeContext bool
	Hash        importer.Hash
	Targets     []string // PROTOCOL/KDF
	DHERequired bool     // psk_dhe_ke required (psk_ke refused)
	EarlyData   bool
	NotBefore   time.Time
	NotAfter    time.Time // zero: no expiry
	Generation  int
	Rotates     []byte        // the identity this generation replaces; nil for a first generation
	Overlap     time.Duration // how long Rotates stays derivable after import
	KeyBits     int           // EPSK size
	KCV         string        // key check value, 6 hex digits
	KeyKind     string
	WrappingKey string // PKCS#11: the label of the token's key-encryption key
	Key         []byte // the EPSK (clear) or the wrapped blob; the owner wipes it
	MAC         []byte
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Authenticated returns the bundle's authenticated text: every line but
// the key and the MAC. It never contains key bytes.
func (b *Bundle) Authenticated() []byte {
	var w bytes.Buffer
	line := func(k, v string) { fmt.Fprintf(&w, "%s: %s\n", k, v) }
	w.WriteString(Magic + "\n")
	line("for-node", b.ForNode)
	line("identity-hex", hex.EncodeToString(b.Identity))
	line("client", orDash(b.Client))
	line("server", orDash(b.Server))
	line("group", orDash(strings.Join(b.Group, ",")))
	line("node-context", yesNo(b.NodeContext))
	line("hash", b.Hash.String())
	line("targets", strings.Join(b.Targets, ","))
	line("psk-dhe-ke-required", yesNo(b.DHERequired))
	line("early-data", yesNo(b.EarlyData))
	line("not-before", b.NotBefore.UTC().Format(time.RFC3339))
	na := "-"
	if !b.NotAfter.IsZero() {
		na = b.NotAfter.UTC().Format(time.RFC3339)
	}
	line("not-after", na)
	line("generation", strconv.Itoa(b.Generation))
	line("rotates-hex", orDash(hex.EncodeToString(b.Rotates)))
	ov := "-"
	if len(b.Rotates) > 0 {
		ov = b.Overlap.String()
	}
	line("overlap", ov)
	line("key-bits", strconv.Itoa(b.KeyBits))
	line("key-check-value", b.KCV)
	line("key-kind", b.KeyKind)
	line("wrapping-key", orDash(b.WrappingKey))
	return w.Bytes()
}

// encodeKey is the key line's value.
func (b *Bundle) encodeKey() []byte {
	if b.KeyKind == KeyClear {
		out := make([]byte, hex.EncodedLen(len(b.Key)))
		hex.Encode(out, b.Key)
		return out
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(b.Key)))
	base64.StdEncoding.Encode(out, b.Key)
	return out
}

// Seal sets the MAC under macKey (vault.BundleMACKeyFromPRK).
func (b *Bundle) Seal(macKey []byte) { b.MAC = vault.BundleMAC(macKey, b.Authenticated()) }

// Verify checks the MAC under macKey.
func (b *Bundle) Verify(macKey []byte) error {
	if !hmac.Equal(vault.BundleMAC(macKey, b.Authenticated()), b.MAC) {
		return vault.ErrBundleMAC
	}
	return nil
}

// Marshal returns the bundle file's bytes; the caller wipes them (they
// hold the key).
func (b *Bundle) Marshal() []byte {
	auth := b.Authenticated()
	k := b.encodeKey()
	defer clear(k)
	out := make([]byte, 0, len(auth)+len(k)+200)
	out = append(out, auth...)
	out = append(out, "key: "...)
	out = append(out, k...)
	out = append(out, '\n')
	out = append(out, "mac: "+hex.EncodeToString(b.MAC)+"\n"...)
	return out
}

// fields, in their one order.
var fields = []string{"for-node", "identity-hex", "client", "server", "group", "node-context", "hash", "targets",
	"psk-dhe-ke-required", "early-data", "not-before", "not-after", "generation", "rotates-hex", "overlap",
	"key-bits", "key-check-value", "key-kind", "wrapping-key", "key", "mac"}

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, args...)...)
}

// Parse reads a bundle strictly: the magic line, every field once in its
// order, nothing else. It checks the syntax of each value, not the MAC
// (which needs the key: Verify, or the daemon for a wrapped key). Errors
// never quote the key line.
func Parse(data []byte) (*Bundle, error) {
	if len(data) > MaxSize {
		return nil, formatErr("%d bytes, limit %d", len(data), MaxSize)
	}
	if !bytes.HasPrefix(data, []byte(Magic+"\n")) {
		if bytes.HasPrefix(data, []byte("pskvault-bundle ")) {
			return nil, formatErr("unsupported version (this pskvault reads %q)", Magic)
		}
		return nil, formatErr("it does not start with %q (a bare hex key goes to --key-file)", Magic)
	}
	rest := data[len(Magic)+1:]
	vals := make(map[string][]byte, len(fields))
	for i, name := range fields {
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			return nil, formatErr("line %d (%s): missing or not ended by a newline", i+2, name)
		}
		line := rest[:nl]
		rest = rest[nl+1:]
		prefix := name + ": "
		if !bytes.HasPrefix(line, []byte(prefix)) {
			return nil, formatErr("line %d: want field %q", i+2, name)
		}
		vals[name] = line[len(prefix):]
	}
	if len(rest) != 0 {
		return nil, formatErr("%d bytes after the mac line", len(rest))
	}
	b := &Bundle{}
	str := func(k string) string { return string(vals[k]) }
	dash := func(k string) string {
		if s := str(k); s != "-" {
			return s
		}
		return ""
	}
	yn := func(k string) (bool, error) {
		switch str(k) {
		case "yes":
			return true, nil
		case "no":
			return false, nil
		}
		return false, formatErr("%s: want yes or no", k)
	}
	var err error
	b.ForNode = str("for-node")
	if err := vault.CheckNodeID(b.ForNode); err != nil {
		return nil, formatErr("for-node: %v", err)
	}
	if b.Identity, err = hex.DecodeString(str("identity-hex")); err != nil || len(b.Identity) == 0 {
		return nil, formatErr("identity-hex: not a non-empty hex string")
	}
	b.Client, b.Server = dash("client"), dash("server")
	if g := dash("group"); g != "" {
		b.Group = strings.Split(g, ",")
	}
	if (b.Client == "") != (b.Server == "") || (b.Client == "") == (len(b.Group) == 0) {
		return nil, formatErr("give client and server, or a group, not both")
	}
	for _, n := range append(slices.Clone(b.Group), b.Client, b.Server) {
		if n == "" {
			continue
		}
		if err := vault.CheckNodeID(n); err != nil {
			return nil, formatErr("node %q: %v", n, err)
		}
	}
	if b.NodeContext, err = yn("node-context"); err != nil {
		return nil, err
	}
	if b.Hash, err = importer.ParseHash(str("hash")); err != nil || str("hash") != b.Hash.String() {
		return nil, formatErr("hash: want sha256 or sha384")
	}
	if t := str("targets"); t != "" {
		b.Targets = strings.Split(t, ",")
	}
	if _, err := vault.ParseTargets(b.Targets); err != nil || len(b.Targets) == 0 {
		return nil, formatErr("targets: want PROTOCOL/KDF,... (%v)", err)
	}
	if b.DHERequired, err = yn("psk-dhe-ke-required"); err != nil {
		return nil, err
	}
	if b.EarlyData, err = yn("early-data"); err != nil {
		return nil, err
	}
	if b.NotBefore, err = time.Parse(time.RFC3339, str("not-before")); err != nil {
		return nil, formatErr("not-before: want RFC 3339")
	}
	if na := dash("not-after"); na != "" {
		if b.NotAfter, err = time.Parse(time.RFC3339, na); err != nil {
			return nil, formatErr("not-after: want RFC 3339 or -")
		}
	}
	if b.Generation, err = strconv.Atoi(str("generation")); err != nil || b.Generation < 1 || strconv.Itoa(b.Generation) != str("generation") {
		return nil, formatErr("generation: want a positive number")
	}
	if r := dash("rotates-hex"); r != "" {
		if b.Rotates, err = hex.DecodeString(r); err != nil {
			return nil, formatErr("rotates-hex: not hex")
		}
		if b.Overlap, err = time.ParseDuration(str("overlap")); err != nil || b.Overlap < 0 || b.Overlap.String() != str("overlap") {
			return nil, formatErr("overlap: want a duration such as 24h0m0s")
		}
	} else if str("overlap") != "-" {
		return nil, formatErr("overlap: only for a rotation (rotates-hex set)")
	}
	if (b.Generation > 1) != (len(b.Rotates) > 0) {
		return nil, formatErr("generation %d and rotates-hex disagree", b.Generation)
	}
	if b.KeyBits, err = strconv.Atoi(str("key-bits")); err != nil || b.KeyBits < 128 || b.KeyBits%8 != 0 {
		return nil, formatErr("key-bits: want a multiple of 8, at least 128")
	}
	if k := str("key-check-value"); len(k) != 2*vault.KCVLen || !isHex(k) {
		return nil, formatErr("key-check-value: want %d hex digits", 2*vault.KCVLen)
	}
	b.KCV = str("key-check-value")
	b.KeyKind, b.WrappingKey = str("key-kind"), dash("wrapping-key")
	switch b.KeyKind {
	case KeyClear:
		if b.WrappingKey != "" {
			return nil, formatErr("wrapping-key: only for a pkcs11 key")
		}
		kv := vals["key"]
		b.Key = make([]byte, hex.DecodedLen(len(kv)))
		if _, err := hex.Decode(b.Key, kv); err != nil || len(b.Key)*8 != b.KeyBits {
			clear(b.Key)
			return nil, formatErr("key: not %d bits of hex", b.KeyBits)
		}
	case KeyTPM, KeyPKCS11:
		if b.KeyKind == KeyTPM && b.WrappingKey != "" {
			return nil, formatErr("wrapping-key: only for a pkcs11 key")
		}
		if b.Key, err = base64.StdEncoding.Strict().DecodeString(str("key")); err != nil || len(b.Key) == 0 {
			return nil, formatErr("key: not base64")
		}
	default:
		return nil, formatErr("key-kind: want clear, tpm or pkcs11")
	}
	if b.MAC, err = hex.DecodeString(str("mac")); err != nil || len(b.MAC) != 32 {
		clear(b.Key)
		return nil, formatErr("mac: want 64 hex digits")
	}
	// One encoding only: what is authenticated is the re-encoded text, so
	// an accepted bundle must be exactly that (lower-case hex, canonical
	// durations and times), or an edit could pass unnoticed.
	canon := b.Marshal()
	same := bytes.Equal(canon, data)
	clear(canon)
	if !same {
		clear(b.Key)
		return nil, formatErr("not in canonical form (lower-case hex, RFC 3339 UTC times, Go durations as pskvault writes them)")
	}
	return b, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}
