package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// ContentTypeTLV selects the binary form of lookup, offers and derive: a
// request body in this form is sent with Content-Type ContentTypeTLV, and
// an answer in this form is asked for with Accept: ContentTypeTLV. The two
// are independent; JSON stays the default for both. docs/API.md ("Binary
// form") is the reference; clients/c speaks only this form.
//
// A body is a sequence of fields, each a one-byte tag, a four-byte
// big-endian length and that many value bytes. Integers are big-endian and
// of the fixed size given for their tag. Key material is only ever in
// TagIPSKX.
const ContentTypeTLV = "application/vnd.pskvault.tlv"

// HeaderError carries the error code ("no_key", "forbidden", ...) of every
// error answer, whatever the body's form, so a client that does not parse
// JSON still learns it.
const HeaderError = "Pskvault-Error"

// Request and answer tags. The same number means the same thing in a
// request and in an answer.
const (
	TagImportedIdentity byte = 0x01 // serialized RFC 9258 ImportedIdentity (PskIdentity.identity)
	TagContext          byte = 0x02 // RFC 9258 context (may be empty)
	TagProtocol         byte = 0x03 // u16 target_protocol: 0x0304 TLS 1.3, 0xfefc DTLS 1.3
	TagKDF              byte = 0x04 // u16 target_kdf: 0x0001 HKDF_SHA256, 0x0002 HKDF_SHA384
	TagIdentity         byte = 0x05 // external identity
	TagNode             byte = 0x06 // offers: the server node; derive: the peer node (UTF-8)
	TagRole             byte = 0x07 // u8 this node's role: 1 client, 2 server
	TagIPSKX            byte = 0x08 // the imported PSK: the only key material
	TagHash             byte = 0x09 // u16 the EPSK's hash: 0x0001 SHA-256, 0x0002 SHA-384
	TagFlags            byte = 0x0a // u32 policy flags (Flag*)
	TagMaxEarlyData     byte = 0x0b // u32 max_early_data_size; present only when early data is allowed
	TagGeneration       byte = 0x0c // u32 rotation generation, 1 for a PSK never rotated
	TagNotAfter         byte = 0x0d // u64 expiry, seconds since the Unix epoch; absent: none
	TagOffer            byte = 0x20 // offers answer: one offer, a nested sequence of key fields
)

// Policy flags of TagFlags.
const (
	FlagDHERequired uint32 = 1 << 0 // psk_dhe_ke only: never psk_ke
	FlagEarlyData   uint32 = 1 << 1 // 0-RTT data may be accepted under this key
	FlagLowEntropy  uint32 = 1 << 2 // imported with --allow-low-entropy (RFC 9257 section 4.2)
	FlagGroup       uint32 = 1 << 3 // a group PSK, not pairwise
	FlagNodeContext uint32 = 1 << 4 // the context is the canonical node-identifier context
	FlagFinalized   uint32 = 1 << 5 // the main key is destroyed; only kept imported keys remain
)

// Roles of TagRole.
const (
	RoleClient byte = 1
	RoleServer byte = 2
)

// DefaultMaxEarlyData is the TagMaxEarlyData the daemon sends for a PSK that
// allows early data: records carry no per-PSK limit yet, so it is TLS's
// usual record-size bound.
const DefaultMaxEarlyData = 16384

// ErrTLV reports a malformed binary body.
var ErrTLV = errors.New("malformed binary body")

func tlvErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrTLV}, args...)...)
}

// AppendField appends one field.
func AppendField(b []byte, tag byte, v []byte) []byte {
	b = append(b, tag)
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// EachField calls f for every field of b in order, and fails on a
// truncated field or an error from f.
func EachField(b []byte, f func(tag byte, v []byte) error) error {
	for len(b) > 0 {
		if len(b) < 5 {
			return tlvErr("truncated field header")
		}
		tag, n := b[0], binary.BigEndian.Uint32(b[1:5])
		b = b[5:]
		if uint64(n) > uint64(len(b)) {
			return tlvErr("field 0x%02x: length %d beyond the body", tag, n)
		}
		if err := f(tag, b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// fixed checks a fixed-size integer field.
func fixed(tag byte, v []byte, n int) error {
	if len(v) != n {
		return tlvErr("field 0x%02x: %d bytes, want %d", tag, len(v), n)
	}
	return nil
}

// BinRequest is a lookup, offers or derive request in the binary form.
// Which fields an endpoint takes:
//   - lookup: ImportedIdentity (required), Context (optional: the context
//     the server requires), Protocol and KDF (optional, 0: any);
//   - offers: Node (the server node, required), Context, Protocol, KDF;
//   - derive: Identity (required), Context, Protocol, KDF, Node (peer) and
//     Role (for group PSKs).
type BinRequest struct {
	ImportedIdentity []byte
	Identity         []byte
	Context          []byte
	HasContext       bool
	Protocol, KDF    uint16
	Node             string
	Role             byte
}

// Marshal encodes r; zero fields are left out (Context is written when
// HasContext is set, even empty).
func (r BinRequest) Marshal() []byte {
	var b []byte
	if r.ImportedIdentity != nil {
		b = AppendField(b, TagImportedIdentity, r.ImportedIdentity)
	}
	if r.HasContext {
		b = AppendField(b, TagContext, r.Context)
	}
	if r.Protocol != 0 {
		b = AppendField(b, TagProtocol, binary.BigEndian.AppendUint16(nil, r.Protocol))
	}
	if r.KDF != 0 {
		b = AppendField(b, TagKDF, binary.BigEndian.AppendUint16(nil, r.KDF))
	}
	if r.Identity != nil {
		b = AppendField(b, TagIdentity, r.Identity)
	}
	if r.Node != "" {
		b = AppendField(b, TagNode, []byte(r.Node))
	}
	if r.Role != 0 {
		b = AppendField(b, TagRole, []byte{r.Role})
	}
	return b
}

// ParseBinRequest decodes a request strictly: every tag known, none twice,
// integers of their exact size. Which fields the endpoint needs is checked
// by the endpoint.
func ParseBinRequest(b []byte) (BinRequest, error) {
	var r BinRequest
	seen := map[byte]bool{}
	err := EachField(b, func(tag byte, v []byte) error {
		if seen[tag] {
			return tlvErr("field 0x%02x given twice", tag)
		}
		seen[tag] = true
		switch tag {
		case TagImportedIdentity:
			r.ImportedIdentity = append([]byte{}, v...)
		case TagContext:
			r.Context, r.HasContext = append([]byte{}, v...), true
		case TagProtocol:
			if err := fixed(tag, v, 2); err != nil {
				return err
			}
			r.Protocol = binary.BigEndian.Uint16(v)
		case TagKDF:
			if err := fixed(tag, v, 2); err != nil {
				return err
			}
			r.KDF = binary.BigEndian.Uint16(v)
		case TagIdentity:
			r.Identity = append([]byte{}, v...)
		case TagNode:
			r.Node = string(v)
		case TagRole:
			if err := fixed(tag, v, 1); err != nil {
				return err
			}
			if v[0] != RoleClient && v[0] != RoleServer {
				return tlvErr("role %d: want 1 (client) or 2 (server)", v[0])
			}
			r.Role = v[0]
		default:
			return tlvErr("unknown request field 0x%02x", tag)
		}
		return nil
	})
	return r, err
}

// BinKey is one key in the binary form: a derive or lookup answer, or one
// offer. IPSKX is secret.
type BinKey struct {
	ImportedIdentity []byte
	IPSKX            []byte
	Identity         []byte
	Context          []byte
	Protocol, KDF    uint16
	Hash             uint16
	Role             byte
	Flags            uint32
	MaxEarlyData     uint32
	Generation       uint32
	NotAfter         time.Time // zero: none
}

// AppendTo appends k's fields to b.
func (k *BinKey) AppendTo(b []byte) []byte {
	u16 := func(x uint16) []byte { return binary.BigEndian.AppendUint16(nil, x) }
	u32 := func(x uint32) []byte { return binary.BigEndian.AppendUint32(nil, x) }
	b = AppendField(b, TagImportedIdentity, k.ImportedIdentity)
	b = AppendField(b, TagContext, k.Context)
	b = AppendField(b, TagProtocol, u16(k.Protocol))
	b = AppendField(b, TagKDF, u16(k.KDF))
	b = AppendField(b, TagIdentity, k.Identity)
	if k.Role != 0 {
		b = AppendField(b, TagRole, []byte{k.Role})
	}
	b = AppendField(b, TagIPSKX, k.IPSKX)
	b = AppendField(b, TagHash, u16(k.Hash))
	b = AppendField(b, TagFlags, u32(k.Flags))
	if k.Flags&FlagEarlyData != 0 {
		b = AppendField(b, TagMaxEarlyData, u32(k.MaxEarlyData))
	}
	b = AppendField(b, TagGeneration, u32(k.Generation))
	if !k.NotAfter.IsZero() {
		b = AppendField(b, TagNotAfter, binary.BigEndian.AppendUint64(nil, uint64(k.NotAfter.Unix())))
	}
	return b
}

// ParseBinKey decodes one key. As every client must, it skips tags it does
// not know (later versions add fields), and refuses a known tag given twice
// or of the wrong size, and a key without ImportedIdentity or IPSKX, or
// whose IPSKX length is not the KDF's.
func ParseBinKey(b []byte) (BinKey, error) {
	var k BinKey
	seen := map[byte]bool{}
	err := EachField(b, func(tag byte, v []byte) error {
		if tag > TagNotAfter || tag == 0 {
			return nil // unknown: skipped
		}
		if seen[tag] {
			return tlvErr("field 0x%02x given twice", tag)
		}
		seen[tag] = true
		var err error
		switch tag {
		case TagImportedIdentity:
			k.ImportedIdentity = append([]byte{}, v...)
		case TagContext:
			k.Context = append([]byte{}, v...)
		case TagIdentity:
			k.Identity = append([]byte{}, v...)
		case TagIPSKX:
			k.IPSKX = append([]byte{}, v...)
		case TagNode:
			// not part of a key; tolerated
		case TagProtocol, TagKDF, TagHash:
			if err = fixed(tag, v, 2); err == nil {
				x := binary.BigEndian.Uint16(v)
				switch tag {
				case TagProtocol:
					k.Protocol = x
				case TagKDF:
					k.KDF = x
				default:
					k.Hash = x
				}
			}
		case TagRole:
			if err = fixed(tag, v, 1); err == nil {
				k.Role = v[0]
			}
		case TagFlags, TagMaxEarlyData, TagGeneration:
			if err = fixed(tag, v, 4); err == nil {
				x := binary.BigEndian.Uint32(v)
				switch tag {
				case TagFlags:
					k.Flags = x
				case TagMaxEarlyData:
					k.MaxEarlyData = x
				default:
					k.Generation = x
				}
			}
		case TagNotAfter:
			if err = fixed(tag, v, 8); err == nil {
				s := binary.BigEndian.Uint64(v)
				if s > math.MaxInt64 {
					return tlvErr("not_after out of range")
				}
				k.NotAfter = time.Unix(int64(s), 0).UTC()
			}
		}
		return err
	})
	if err == nil {
		switch {
		case len(k.ImportedIdentity) == 0:
			err = tlvErr("key without an imported identity")
		case len(k.IPSKX) == 0:
			err = tlvErr("key without ipskx")
		case k.KDF == 1 && len(k.IPSKX) != 32, k.KDF == 2 && len(k.IPSKX) != 48:
			err = tlvErr("ipskx of %d bytes for KDF 0x%04x", len(k.IPSKX), k.KDF)
		}
	}
	if err != nil {
		clear(k.IPSKX)
		return BinKey{}, err
	}
	return k, nil
}

// AppendOffers appends an offers answer: one TagOffer field per key.
func AppendOffers(b []byte, keys []BinKey) []byte {
	for i := range keys {
		var rec []byte
		rec = keys[i].AppendTo(rec)
		b = AppendField(b, TagOffer, rec)
		clear(rec)
	}
	return b
}

// ParseBinOffers decodes an offers answer; unknown top-level tags are
// skipped.
func ParseBinOffers(b []byte) ([]BinKey, error) {
	var out []BinKey
	err := EachField(b, func(tag byte, v []byte) error {
		if tag != TagOffer {
			return nil
		}
		k, err := ParseBinKey(v)
		if err != nil {
			return fmt.Errorf("offer %d: %w", len(out), err)
		}
		out = append(out, k)
		return nil
	})
	if err != nil {
		for _, k := range out {
			clear(k.IPSKX)
		}
		return nil, err
	}
	return out, nil
}
