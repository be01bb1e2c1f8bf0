package vault

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/pskvault/pskvault/importer"
)

// The PSK record as stored in vault.db's psks bucket (issue 12: records are
// read from the database on demand, so decoding one must be cheap and the
// file small). docs/DESIGN.md "State on disk" says why this form and not
// JSON, gob or protobuf; docs/BENCHMARKS.md "Record encoding" what it costs.
//
// Layout (version 1). uvarint and varint are encoding/binary's
// (AppendUvarint, AppendVarint: zigzag); bytes and string are a uvarint
// length then the bytes; u16 is big-endian.
//
//	0x01                        version (a JSON record, written before, starts with '{')
//	uvarint flags               recordFlag* below; unknown bits are refused
//	bytes   Identity
//	byte    Hash                importer.SHA256 or importer.SHA384
//	varint  KeyBits
//	string  ClientNode, ServerNode
//	uvarint n, n × (u16 Protocol, u16 KDF)              Targets
//	for each time flag set, in flag order: varint unix seconds, uvarint nanoseconds
//	byte    State               1 active, 2 revoked
//	string  Origin, Backend
//	uvarint KeySlot
//	bytes   Sealed
//	uvarint n, n × string       Group
//	uvarint n, n × string       EntropyFindings
//	string  Provenance
//	bytes   Fingerprint
//	string  KCV
//	uvarint n, n × (string Rule, Section, Level, Message)  IdentityFindings
//	varint  Generation
//	bytes   RotatedFrom, RotatedTo
//	string  RevokeReason
//	uvarint n, n × (u16 Protocol, u16 KDF, bytes Context)  Finalized (never the Box)
//
// Handle and every Finalized[i].Box are never written: they exist on disk
// only inside Sealed (keyslots.go). Empty byte slices and lists decode as
// nil; times decode in UTC (what the JSON form gave for the UTC times the
// vault writes), the zero time as the zero time.
//
// A field added to PSK or Policy fails TestRecordCodecEveryField until the
// codec carries it: append it under a new version byte (0x02) and keep
// decoding version 1 records with the field zero, as JSON records are
// decoded with the fields they lack zero (every zero value is the safe
// default, policy.go).

const recordVersion1 = 0x01

const (
	recordFlagPSKKE = 1 << iota
	recordFlagEarlyData
	recordFlagNodeContext
	recordFlagLowEntropy
	recordFlagRandomIdentity
	recordFlagCreated
	recordFlagNotAfter
	recordFlagDeletePending
	recordFlagKeyMissing
	recordFlagRevokedAt
	recordFlagFinalizedAt
	recordFlagsKnown = recordFlagFinalizedAt<<1 - 1
)

// State codes in the binary record.
const (
	stateCodeActive  = 1
	stateCodeRevoked = 2
)

// The times a record may hold: those JSON can carry too (years 1-9999).
const (
	minRecordUnix = -62135596800 // 0001-01-01T00:00:00Z, the zero time.Time
	maxRecordUnix = 253402300799 // 9999-12-31T23:59:59Z
)

// recordTimes lists p's times in flag order.
func recordTimes(p *PSK) [6]*time.Time {
	return [6]*time.Time{&p.Created, &p.NotAfter, &p.DeletePending, &p.KeyMissing, &p.RevokedAt, &p.FinalizedAt}
}

// checkEncodable reports what in p the record form cannot hold (and so
// decodeRecord would refuse): an unknown hash, state or target, or a time
// outside years 1-9999 (which json.Marshal refused before too).
func checkEncodable(p *PSK) error {
	if !p.Hash.Valid() {
		return fmt.Errorf("%w: PSK record %x: unknown hash %d", ErrInvalid, p.Identity, uint8(p.Hash))
	}
	if p.State != StateActive && p.State != StateRevoked {
		return fmt.Errorf("%w: PSK record %x: unknown state %q", ErrInvalid, p.Identity, p.State)
	}
	for _, t := range p.Targets {
		if err := checkTarget(t); err != nil {
			return fmt.Errorf("%w: PSK record %x: target: %w", ErrInvalid, p.Identity, err)
		}
	}
	for _, s := range p.Finalized {
		if err := checkTarget(s.Target); err != nil {
			return fmt.Errorf("%w: PSK record %x: finalized target: %w", ErrInvalid, p.Identity, err)
		}
	}
	for _, t := range recordTimes(p) {
		if !t.IsZero() && (t.Unix() < minRecordUnix || t.Unix() > maxRecordUnix) {
			return fmt.Errorf("%w: PSK record %x: time %v outside years 1-9999", ErrInvalid, p.Identity, *t)
		}
	}
	return nil
}

func checkTarget(t Target) error {
	if err := t.Protocol.Check(); err != nil {
		return err
	}
	return t.KDF.Check()
}

// encodeRecord is p in the binary record form, without its Handle and its
// Finalized boxes. It encodes any p; diskRecord first refuses, with
// checkEncodable, what decodeRecord would not read back.
func encodeRecord(p *PSK) []byte {
	n := 64 + len(p.Identity) + len(p.ClientNode) + len(p.ServerNode) + 4*len(p.Targets) +
		len(p.Origin) + len(p.Backend) + len(p.Sealed) + len(p.Provenance) + len(p.Fingerprint) +
		len(p.KCV) + len(p.RotatedFrom) + len(p.RotatedTo) + len(p.RevokeReason)
	for _, s := range p.Group {
		n += 2 + len(s)
	}
	for _, s := range p.EntropyFindings {
		n += 2 + len(s)
	}
	for _, f := range p.IdentityFindings {
		n += 8 + len(f.Rule) + len(f.Section) + len(f.Level) + len(f.Message)
	}
	for _, s := range p.Finalized {
		n += 7 + len(s.Context)
	}
	b := make([]byte, 0, n)

	var flags uint64
	for i, on := range [...]bool{p.PSKKE, p.EarlyData, p.NodeContext, p.LowEntropy, p.RandomIdentity} {
		if on {
			flags |= 1 << i
		}
	}
	times := recordTimes(p)
	for i, t := range times {
		if !t.IsZero() {
			flags |= recordFlagCreated << i
		}
	}
	b = append(b, recordVersion1)
	b = binary.AppendUvarint(b, flags)
	b = appendBytes(b, p.Identity)
	b = append(b, byte(p.Hash))
	b = binary.AppendVarint(b, int64(p.KeyBits))
	b = appendBytes(b, p.ClientNode)
	b = appendBytes(b, p.ServerNode)
	b = binary.AppendUvarint(b, uint64(len(p.Targets)))
	for _, t := range p.Targets {
		b = binary.BigEndian.AppendUint16(b, uint16(t.Protocol))
		b = binary.BigEndian.AppendUint16(b, uint16(t.KDF))
	}
	for _, t := range times {
		if !t.IsZero() {
			b = binary.AppendVarint(b, t.Unix())
			b = binary.AppendUvarint(b, uint64(t.Nanosecond()))
		}
	}
	var state byte
	switch p.State {
	case StateActive:
		state = stateCodeActive
	case StateRevoked:
		state = stateCodeRevoked
	}
	b = append(b, state)
	b = appendBytes(b, p.Origin)
	b = appendBytes(b, p.Backend)
	b = binary.AppendUvarint(b, uint64(p.KeySlot))
	b = appendBytes(b, p.Sealed)

	b = appendStrings(b, p.Group)
	b = appendStrings(b, p.EntropyFindings)
	b = appendBytes(b, p.Provenance)
	b = appendBytes(b, p.Fingerprint)
	b = appendBytes(b, p.KCV)
	b = binary.AppendUvarint(b, uint64(len(p.IdentityFindings)))
	for _, f := range p.IdentityFindings {
		b = appendBytes(b, f.Rule)
		b = appendBytes(b, f.Section)
		b = appendBytes(b, f.Level)
		b = appendBytes(b, f.Message)
	}
	b = binary.AppendVarint(b, int64(p.Generation))
	b = appendBytes(b, p.RotatedFrom)
	b = appendBytes(b, p.RotatedTo)
	b = appendBytes(b, p.RevokeReason)
	b = binary.AppendUvarint(b, uint64(len(p.Finalized)))
	for _, s := range p.Finalized {
		b = binary.BigEndian.AppendUint16(b, uint16(s.Target.Protocol))
		b = binary.BigEndian.AppendUint16(b, uint16(s.Target.KDF))
		b = appendBytes(b, s.Context) // never s.Box
	}
	return b
}

func appendBytes[T ~string | ~[]byte](b []byte, s T) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendBytes(b, s)
	}
	return b
}

// decodeRecord reads a record from vault.db: the binary form, or the JSON
// form of records written before it (they start with '{'). It is strict:
// an unknown version or flag, a truncated or over-long record, a length
// beyond the record, an unknown hash, state or target is an error wrapping
// ErrInvalid. It allocates O(len(raw)) at most, and the record it returns
// shares no memory with raw (bbolt's pages are valid only inside their
// transaction).
func decodeRecord(raw []byte) (*PSK, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: PSK record is empty", ErrInvalid)
	}
	switch raw[0] {
	case '{':
		p := &PSK{}
		if err := json.Unmarshal(raw, p); err != nil {
			return nil, fmt.Errorf("%w: PSK record (JSON): %w", ErrInvalid, err)
		}
		return p, nil
	case recordVersion1:
	default:
		return nil, fmt.Errorf("%w: PSK record has unknown version 0x%02x", ErrInvalid, raw[0])
	}
	r := recordReader{b: raw[1:], size: len(raw)}
	p := &PSK{}
	flags := r.uvarint("flags")
	if r.err == nil && flags&^recordFlagsKnown != 0 {
		r.fail("unknown flags 0x%x", flags&^recordFlagsKnown)
	}
	p.PSKKE = flags&recordFlagPSKKE != 0
	p.EarlyData = flags&recordFlagEarlyData != 0
	p.NodeContext = flags&recordFlagNodeContext != 0
	p.LowEntropy = flags&recordFlagLowEntropy != 0
	p.RandomIdentity = flags&recordFlagRandomIdentity != 0

	p.Identity = r.bytes("identity")
	if h := importer.Hash(r.byte("hash")); r.err == nil {
		if !h.Valid() {
			r.fail("unknown hash %d", uint8(h))
		}
		p.Hash = h
	}
	p.KeyBits = r.int("key bits")
	p.ClientNode = r.string("client node")
	p.ServerNode = r.string("server node")
	if n := r.count("targets", 4); n > 0 {
		p.Targets = make([]Target, n)
		for i := range p.Targets {
			p.Targets[i] = r.target("target")
		}
	}
	for i, t := range recordTimes(p) {
		if flags&(recordFlagCreated<<i) != 0 {
			*t = r.time()
		}
	}
	switch s := r.byte("state"); {
	case r.err != nil:
	case s == stateCodeActive:
		p.State = StateActive
	case s == stateCodeRevoked:
		p.State = StateRevoked
	default:
		r.fail("unknown state %d", s)
	}
	p.Origin = r.common("origin")
	p.Backend = r.common("backend")
	if s := r.uvarint("key slot"); r.err == nil {
		if s > math.MaxUint32 {
			r.fail("key slot %d out of range", s)
		}
		p.KeySlot = uint32(s)
	}
	p.Sealed = r.bytes("sealed")

	p.Group = r.strings("group")
	p.EntropyFindings = r.strings("entropy findings")
	p.Provenance = r.string("provenance")
	p.Fingerprint = r.bytes("fingerprint")
	p.KCV = r.string("kcv")
	if n := r.count("identity findings", 4); n > 0 {
		p.IdentityFindings = make([]Finding, n)
		for i := range p.IdentityFindings {
			f := &p.IdentityFindings[i]
			f.Rule = r.string("finding rule")
			f.Section = r.string("finding section")
			f.Level = r.string("finding level")
			f.Message = r.string("finding message")
		}
	}
	p.Generation = r.int("generation")
	p.RotatedFrom = r.bytes("rotated from")
	p.RotatedTo = r.bytes("rotated to")
	p.RevokeReason = r.string("revoke reason")
	if n := r.count("finalized keys", 5); n > 0 {
		p.Finalized = make([]Sealed, n)
		for i := range p.Finalized {
			p.Finalized[i].Target = r.target("finalized target")
			p.Finalized[i].Context = r.bytes("finalized context")
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the last field", len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return p, nil
}

// recordReader reads the fields of a binary record from b; the first
// error sticks and makes every later read return a zero value.
type recordReader struct {
	b    []byte
	size int // of the whole record, for messages
	err  error
}

func (r *recordReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: PSK record (%d bytes): %s", ErrInvalid, r.size, fmt.Sprintf(format, args...))
	}
}

func (r *recordReader) uvarint(what string) uint64 { return r.uvarintOf(what, "") }

// uvarintOf reads a uvarint called what+part in messages (joined only
// then: the concatenation would cost an allocation per field).
func (r *recordReader) uvarintOf(what, part string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		if n == 0 {
			r.fail("truncated at %s%s", what, part)
		} else {
			r.fail("%s%s: varint overflows 64 bits", what, part)
		}
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		if n == 0 {
			r.fail("truncated at %s", what)
		} else {
			r.fail("%s: varint overflows 64 bits", what)
		}
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) int(what string) int {
	v := r.varint(what)
	if v != int64(int(v)) {
		r.fail("%s %d out of range", what, v)
		return 0
	}
	return int(v)
}

func (r *recordReader) byte(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail("truncated at %s", what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// field returns the next length-prefixed field, still inside the record.
func (r *recordReader) field(what string) []byte {
	n := r.uvarintOf(what, " length")
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("%s is %d bytes, only %d left", what, n, len(r.b))
		return nil
	}
	f := r.b[:n]
	r.b = r.b[n:]
	return f
}

// bytes is a copy of the next length-prefixed field; nil when it is empty.
func (r *recordReader) bytes(what string) []byte {
	f := r.field(what)
	if len(f) == 0 {
		return nil
	}
	return append(make([]byte, 0, len(f)), f...)
}

func (r *recordReader) string(what string) string { return string(r.field(what)) }

// common is string for the fields most records share a value of (Origin,
// Backend): those values cost no allocation.
func (r *recordReader) common(what string) string {
	switch f := r.field(what); string(f) { // compiled without a conversion
	case "imported":
		return "imported"
	case "generated":
		return "generated"
	case "imported-wrapped":
		return "imported-wrapped"
	case "soft":
		return "soft"
	case "tpm":
		return "tpm"
	case "pkcs11":
		return "pkcs11"
	default:
		return string(f)
	}
}

// count reads the length of a list whose elements take at least each bytes
// each, refusing one the rest of the record cannot hold (so a list never
// costs more than the record's size).
func (r *recordReader) count(what string, each int) int {
	n := r.uvarintOf(what, " count")
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)/each) {
		r.fail("%d %s cannot fit in the %d bytes left", n, what, len(r.b))
		return 0
	}
	return int(n)
}

func (r *recordReader) strings(what string) []string {
	n := r.count(what, 1)
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.string(what)
	}
	return ss
}

func (r *recordReader) target(what string) Target {
	if r.err != nil {
		return Target{}
	}
	if len(r.b) < 4 {
		r.fail("truncated at %s", what)
		return Target{}
	}
	t := Target{importer.Protocol(binary.BigEndian.Uint16(r.b)), importer.KDF(binary.BigEndian.Uint16(r.b[2:]))}
	r.b = r.b[4:]
	if err := checkTarget(t); err != nil {
		r.fail("%s: %v", what, err)
		return Target{}
	}
	return t
}

// time reads a time the flags say is there: never the zero time, which is
// written as an absent flag.
func (r *recordReader) time() time.Time {
	sec := r.varint("time")
	nsec := r.uvarint("time nanoseconds")
	if r.err != nil {
		return time.Time{}
	}
	switch {
	case nsec >= 1e9:
		r.fail("time nanoseconds %d out of range", nsec)
	case sec < minRecordUnix || sec > maxRecordUnix:
		r.fail("time %d outside years 1-9999", sec)
	case sec == minRecordUnix && nsec == 0:
		r.fail("zero time written as present")
	default:
		return time.Unix(sec, int64(nsec)).UTC()
	}
	return time.Time{}
}

// DecodeRecord reads a record as vault.db's psks bucket holds it (binary
// or, written before it, JSON), for tools and tests that read vault.db
// directly. See decodeRecord.
func DecodeRecord(raw []byte) (*PSK, error) { return decodeRecord(raw) }

// EncodeRecord is p as vault.db's psks bucket holds it: without Handle and
// the Finalized boxes, which live only inside Sealed.
func EncodeRecord(p *PSK) ([]byte, error) { return diskRecord(p) }
