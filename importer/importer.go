// Package importer implements the RFC 9258 external PSK importer.
//
// The importer is split so that a hardware backend only ever has to compute
// HMAC under a key it holds:
//
//   - Extract runs once, when a PSK is imported: epskx = HKDF-Extract(0^HashLen, epsk).
//     The caller hands epskx (the PRK) to a backend and wipes it.
//   - Expand turns an ImportedIdentity into HKDF-Expand-Label blocks and asks a
//     MAC function (HMAC under the PRK, computed wherever the PRK lives) for
//     each block: T(i) = HMAC(PRK, T(i-1) || HkdfLabel || i).
//
// The package knows nothing of hardware, sockets or policy.
package importer

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrMalformedIdentity reports an ImportedIdentity that does not parse or
	// cannot be serialized (bad lengths, trailing bytes, empty identity).
	ErrMalformedIdentity = errors.New("malformed ImportedIdentity")
	// ErrIdentityTooLong reports an ImportedIdentity whose serialization
	// would exceed MaxIdentityLen bytes, or an external identity or
	// context over it. It is always wrapped with ErrMalformedIdentity.
	ErrIdentityTooLong = errors.New("over 65535 bytes (RFC 9258: u16 lengths)")
	// ErrUnknownProtocol reports a target_protocol this importer does not
	// support. Never defaulted.
	ErrUnknownProtocol = errors.New("unknown target protocol")
	// ErrLegacyProtocol reports TLS 1.2 or earlier as a target: RFC 9258
	// section 4.1 says external PSKs MUST NOT be imported for those.
	ErrLegacyProtocol = errors.New("external PSKs must not be imported for TLS 1.2 or earlier (RFC 9258 section 4.1)")
	// ErrUnknownKDF reports a target_kdf this importer does not support.
	ErrUnknownKDF = errors.New("unknown target KDF")
	// ErrUnknownHash reports an EPSK hash other than SHA-256 or SHA-384.
	ErrUnknownHash = errors.New("unknown EPSK hash")
	// ErrBadPRK reports a PRK or MAC output of the wrong length.
	ErrBadPRK = errors.New("bad PRK or MAC output length")
)

// MaxIdentityLen is the largest serialized ImportedIdentity (and the largest
// external identity): both travel in 16-bit length-prefixed fields.
const MaxIdentityLen = 65535

// Hash is the hash function associated with an EPSK. It drives HKDF and
// Hash(ImportedIdentity); SHA-256 is the default when the EPSK names none.
type Hash uint8

// EPSK hashes.
const (
	SHA256 Hash = 1
	SHA384 Hash = 2
)

// ParseHash maps "sha256" / "sha384" to a Hash.
func ParseHash(s string) (Hash, error) {
	switch strings.ToLower(s) {
	case "sha256", "sha-256", "":
		return SHA256, nil
	case "sha384", "sha-384":
		return SHA384, nil
	}
	return 0, fmt.Errorf("%w %q (want sha256 or sha384)", ErrUnknownHash, s)
}

func (h Hash) String() string {
	switch h {
	case SHA256:
		return "sha256"
	case SHA384:
		return "sha384"
	}
	return fmt.Sprintf("hash(%d)", uint8(h))
}

// Size is HashLen in bytes, or 0 for an unknown hash.
func (h Hash) Size() int {
	switch h {
	case SHA256:
		return sha256.Size
	case SHA384:
		return sha512.Size384
	}
	return 0
}

// Valid reports whether h is a supported hash.
func (h Hash) Valid() bool { return h.Size() != 0 }

// New returns a fresh hash.Hash constructor for h.
func (h Hash) New() func() hash.Hash {
	switch h {
	case SHA256:
		return sha256.New
	case SHA384:
		return sha512.New384
	}
	return nil
}

// Protocol is the RFC 9258 target_protocol (a TLS ProtocolVersion).
type Protocol uint16

// Supported target protocols.
const (
	TLS13  Protocol = 0x0304
	DTLS13 Protocol = 0xfefc
)

// ParseProtocol maps "tls1.3" / "dtls1.3" to a Protocol.
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToLower(s) {
	case "tls1.3", "tls13":
		return TLS13, nil
	case "dtls1.3", "dtls13":
		return DTLS13, nil
	case "tls1.2", "tls12", "tls1.1", "tls1.0", "dtls1.2", "dtls1.0":
		return 0, fmt.Errorf("%q: %w", s, ErrLegacyProtocol)
	}
	return 0, fmt.Errorf("%w %q (want tls1.3 or dtls1.3)", ErrUnknownProtocol, s)
}

func (p Protocol) String() string {
	switch p {
	case TLS13:
		return "tls1.3"
	case DTLS13:
		return "dtls1.3"
	}
	return fmt.Sprintf("protocol(0x%04x)", uint16(p))
}

// Check returns nil for a supported protocol and a wrapped sentinel otherwise.
func (p Protocol) Check() error {
	switch p {
	case TLS13, DTLS13:
		return nil
	case 0x0300, 0x0301, 0x0302, 0x0303, 0xfeff, 0xfefd:
		return fmt.Errorf("target protocol 0x%04x: %w", uint16(p), ErrLegacyProtocol)
	}
	return fmt.Errorf("%w 0x%04x", ErrUnknownProtocol, uint16(p))
}

// labelPrefix is the HKDF-Expand-Label prefix for the target protocol.
func (p Protocol) labelPrefix() string {
	if p == DTLS13 {
		return "dtls13" // RFC 9147 section 5.9
	}
	return "tls13 "
}

// KDF is the RFC 9258 target_kdf (a TLS KDF identifier, RFC 9258 section 3).
type KDF uint16

// Supported target KDFs.
const (
	HKDFSHA256 KDF = 0x0001
	HKDFSHA384 KDF = 0x0002
)

// ParseKDF maps "sha256" / "sha384" (or "hkdf_sha256" ...) to a KDF.
func ParseKDF(s string) (KDF, error) {
	switch strings.ToLower(s) {
	case "sha256", "hkdf_sha256", "hkdf-sha256":
		return HKDFSHA256, nil
	case "sha384", "hkdf_sha384", "hkdf-sha384":
		return HKDFSHA384, nil
	}
	return 0, fmt.Errorf("%w %q (want sha256 or sha384)", ErrUnknownKDF, s)
}

func (k KDF) String() string {
	switch k {
	case HKDFSHA256:
		return "sha256"
	case HKDFSHA384:
		return "sha384"
	}
	return fmt.Sprintf("kdf(0x%04x)", uint16(k))
}

// Check returns nil for a supported KDF and a wrapped ErrUnknownKDF otherwise.
func (k KDF) Check() error {
	if k.OutputLen() == 0 {
		return fmt.Errorf("%w 0x%04x", ErrUnknownKDF, uint16(k))
	}
	return nil
}

// OutputLen is L, the length of the imported PSK for this target KDF.
func (k KDF) OutputLen() int {
	switch k {
	case HKDFSHA256:
		return 32
	case HKDFSHA384:
		return 48
	}
	return 0
}

// Identity is an RFC 9258 ImportedIdentity.
type Identity struct {
	External []byte   // external_identity, 1..65535 bytes
	Context  []byte   // context, 0..65535 bytes; sent in clear, never secret
	Protocol Protocol // target_protocol
	KDF      KDF      // target_kdf
}

// Check validates lengths and target codes.
func (id Identity) Check() error {
	if len(id.External) == 0 {
		return fmt.Errorf("%w: external identity is empty", ErrMalformedIdentity)
	}
	if n := 2 + len(id.External) + 2 + len(id.Context) + 4; len(id.External) > MaxIdentityLen || len(id.Context) > MaxIdentityLen || n > MaxIdentityLen {
		return fmt.Errorf("%w: serialization would be %d bytes: %w", ErrMalformedIdentity, n, ErrIdentityTooLong)
	}
	if err := id.Protocol.Check(); err != nil {
		return err
	}
	return id.KDF.Check()
}

// Marshal serializes the ImportedIdentity as it goes on the wire in
// PskIdentity.identity.
func (id Identity) Marshal() ([]byte, error) {
	if err := id.Check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 2+len(id.External)+2+len(id.Context)+4)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id.External)))
	b = append(b, id.External...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id.Context)))
	b = append(b, id.Context...)
	b = binary.BigEndian.AppendUint16(b, uint16(id.Protocol))
	b = binary.BigEndian.AppendUint16(b, uint16(id.KDF))
	return b, nil
}

// ParseIdentity strictly decodes a serialized ImportedIdentity: exact
// lengths, no trailing bytes, known target protocol and KDF. The returned
// slices are copies.
func ParseIdentity(b []byte) (Identity, error) {
	var id Identity
	if len(b) > MaxIdentityLen {
		return id, fmt.Errorf("%w: %d bytes: %w", ErrMalformedIdentity, len(b), ErrIdentityTooLong)
	}
	rest := b
	read16 := func(what string) (uint16, error) {
		if len(rest) < 2 {
			return 0, fmt.Errorf("%w: truncated %s", ErrMalformedIdentity, what)
		}
		v := binary.BigEndian.Uint16(rest)
		rest = rest[2:]
		return v, nil
	}
	readVec := func(what string) ([]byte, error) {
		n, err := read16(what + " length")
		if err != nil {
			return nil, err
		}
		if int(n) > len(rest) {
			return nil, fmt.Errorf("%w: %s claims %d bytes, %d remain", ErrMalformedIdentity, what, n, len(rest))
		}
		v := append([]byte{}, rest[:n]...)
		rest = rest[n:]
		return v, nil
	}
	var err error
	if id.External, err = readVec("external_identity"); err != nil {
		return Identity{}, err
	}
	if id.Context, err = readVec("context"); err != nil {
		return Identity{}, err
	}
	p, err := read16("target_protocol")
	if err != nil {
		return Identity{}, err
	}
	k, err := read16("target_kdf")
	if err != nil {
		return Identity{}, err
	}
	if len(rest) != 0 {
		return Identity{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformedIdentity, len(rest))
	}
	id.Protocol, id.KDF = Protocol(p), KDF(k)
	if err := id.Check(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// Extract computes epskx = HKDF-Extract(salt = HashLen zero bytes, epsk).
// The result is the PRK a backend stores; the caller wipes it after use.
func Extract(h Hash, epsk []byte) ([]byte, error) {
	if !h.Valid() {
		return nil, fmt.Errorf("%w %d", ErrUnknownHash, uint8(h))
	}
	// HMAC with an all-zero salt as the key; HMAC wipes the hash state
	// that buffered the EPSK.
	return HMAC(h, make([]byte, h.Size()), epsk), nil
}

// MAC computes HMAC(PRK, data) with the EPSK's hash, under a PRK the caller
// never sees. It must return exactly HashLen bytes.
type MAC func(data []byte) ([]byte, error)

// Plan is everything Expand needs that does not depend on the key: the
// serialized identity and the HkdfLabel. Build it once per request with
// NewPlan; its fields are fixed so they cannot drift from the label.
type Plan struct {
	hash   Hash
	id     Identity
	wire   []byte // the serialized Identity, PskIdentity.identity on the wire
	label  []byte // HkdfLabel
	outLen int    // L
}

// Hash is the EPSK's hash the plan was built for.
func (p *Plan) Hash() Hash { return p.hash }

// Identity returns the ImportedIdentity the plan was built for.
func (p *Plan) Identity() Identity { return p.id }

// ImportedIdentity returns a copy of the serialized ImportedIdentity, what
// goes on the wire as PskIdentity.identity.
func (p *Plan) ImportedIdentity() []byte { return append([]byte(nil), p.wire...) }

// NewPlan validates id and precomputes the HkdfLabel for
// HKDF-Expand-Label(epskx, "derived psk", Hash(ImportedIdentity), L).
func NewPlan(h Hash, id Identity) (*Plan, error) {
	if !h.Valid() {
		return nil, fmt.Errorf("%w %d", ErrUnknownHash, uint8(h))
	}
	wire, err := id.Marshal()
	if err != nil {
		return nil, err
	}
	hh := h.New()()
	hh.Write(wire)
	ctx := hh.Sum(nil)
	l := id.KDF.OutputLen()
	full := id.Protocol.labelPrefix() + "derived psk"
	label := make([]byte, 0, 2+1+len(full)+1+len(ctx))
	label = binary.BigEndian.AppendUint16(label, uint16(l))
	label = append(label, byte(len(full)))
	label = append(label, full...)
	label = append(label, byte(len(ctx)))
	label = append(label, ctx...)
	return &Plan{hash: h, id: id, wire: wire, label: label, outLen: l}, nil
}

// Blocks is the number of HMAC calls Expand makes: ceil(L / HashLen).
func (p *Plan) Blocks() int { return (p.outLen + p.hash.Size() - 1) / p.hash.Size() }

// HkdfLabel returns a copy of the encoded HkdfLabel (the HKDF "info").
func (p *Plan) HkdfLabel() []byte { return append([]byte{}, p.label...) }

// Expand computes ipskx, calling mac once per HKDF-Expand block.
func (p *Plan) Expand(mac MAC) ([]byte, error) {
	if p == nil || !p.hash.Valid() || p.outLen == 0 {
		// A Plan not built by NewPlan would yield an empty key or panic.
		return nil, fmt.Errorf("%w: Plan not built by NewPlan", ErrUnknownKDF)
	}
	n := p.hash.Size()
	out := make([]byte, 0, p.Blocks()*n)
	buf := make([]byte, 0, n+len(p.label)+1)
	var prev []byte
	for i := 1; len(out) < p.outLen; i++ {
		buf = append(buf[:0], prev...)
		buf = append(buf, p.label...)
		buf = append(buf, byte(i))
		t, err := mac(buf)
		if err != nil {
			clear(out[:cap(out)])
			clear(buf[:cap(buf)]) // holds T(i-1)
			return nil, fmt.Errorf("HKDF-Expand block %d: %w", i, err)
		}
		if len(t) != n {
			clear(t)
			clear(out[:cap(out)])
			clear(buf[:cap(buf)])
			return nil, fmt.Errorf("%w: HKDF-Expand block %d is %d bytes, want %d", ErrBadPRK, i, len(t), n)
		}
		out = append(out, t...)
		clear(t) // T(i) is key material: the copy in out is the only one kept
		prev = out[len(out)-n:]
	}
	clear(buf[:cap(buf)])
	clear(out[p.outLen:cap(out)])
	return out[:p.outLen:p.outLen], nil
}

// SoftwareMAC returns a MAC computing HMAC in process memory with prk.
// Backends without hardware, and tests, use it. It does not copy prk.
func SoftwareMAC(h Hash, prk []byte) MAC {
	return func(data []byte) ([]byte, error) {
		if len(prk) != h.Size() {
			return nil, fmt.Errorf("%w: PRK is %d bytes, want %d", ErrBadPRK, len(prk), h.Size())
		}
		return HMAC(h, prk, data), nil
	}
}

// Import is the whole RFC 9258 importer in process memory, from the EPSK:
// it returns the serialized ImportedIdentity and ipskx. Production paths use
// Extract + a backend + Plan.Expand instead, so the PRK stays in the backend.
func Import(h Hash, epsk []byte, id Identity) (wire, ipskx []byte, err error) {
	plan, err := NewPlan(h, id)
	if err != nil {
		return nil, nil, err
	}
	prk, err := Extract(h, epsk)
	if err != nil {
		return nil, nil, err
	}
	defer clear(prk)
	ipskx, err = plan.Expand(SoftwareMAC(h, prk))
	if err != nil {
		return nil, nil, err
	}
	return plan.wire, ipskx, nil
}
