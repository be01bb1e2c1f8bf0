package vault

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pskvault/pskvault/importer"
)

var (
	codecT0 = time.Date(2026, 12, 3, 0, 30, 15, 123456789, time.UTC)
	tlsA    = Target{importer.TLS13, importer.HKDFSHA256}
	dtlsB   = Target{importer.DTLS13, importer.HKDFSHA384}
)

// fullRecord has every field of PSK and Policy set, Handle and the boxes
// included.
func fullRecord() *PSK {
	return &PSK{
		Identity:      []byte("device-0001\x00\xff"),
		Hash:          importer.SHA384,
		KeyBits:       384,
		ClientNode:    "node-a",
		ServerNode:    "node-b",
		Targets:       []Target{tlsA, dtlsB},
		Created:       codecT0,
		NotAfter:      codecT0.Add(365 * 24 * time.Hour),
		State:         StateRevoked,
		Origin:        "imported",
		Backend:       "soft",
		Handle:        []byte("handle-never-written"),
		KeySlot:       0xfffffffe,
		Sealed:        bytes.Repeat([]byte{0xa5}, 80),
		DeletePending: codecT0.Add(time.Minute),
		KeyMissing:    codecT0.Add(2 * time.Minute),
		Policy: Policy{
			PSKKE:            true,
			EarlyData:        true,
			Group:            []string{"node-a", "node-b", "node-c"},
			NodeContext:      true,
			LowEntropy:       true,
			EntropyFindings:  []string{"unchecked: a wrapped key is never seen in clear", "second"},
			Provenance:       "imported on node node-a from key file",
			Fingerprint:      bytes.Repeat([]byte{0x5a}, 32),
			KCV:              "a1b2c3",
			IdentityFindings: []Finding{{Rule: "identity-nfc", Section: "6.1.1", Level: "SHOULD", Message: "not NFC"}, {Rule: "r2", Section: "7", Level: "MAY", Message: "m2"}},
			RandomIdentity:   true,
			Generation:       -3,
			RotatedFrom:      []byte("device-0000"),
			RotatedTo:        []byte("device-0002"),
			RevokedAt:        codecT0.Add(time.Hour),
			RevokeReason:     "compromised",
			Finalized: []Sealed{
				{Target: tlsA, Context: []byte("ctx-1"), Box: []byte("box-never-written-1")},
				{Target: dtlsB, Box: []byte("box-never-written-2")},
			},
			FinalizedAt: codecT0.Add(3 * time.Hour),
		},
	}
}

// typicalRecord is shaped like a soft import's record: 16-byte identity,
// two targets, a 32-byte fingerprint, a KCV, provenance and a sealed
// handle of about 80 bytes.
func typicalRecord() *PSK {
	return &PSK{
		Identity: []byte("device-000000001"), Hash: importer.SHA256, KeyBits: 256,
		ClientNode: "node-a", ServerNode: "gateway-01", Targets: []Target{tlsA, {importer.TLS13, importer.HKDFSHA384}},
		Created: codecT0.Truncate(time.Second), State: StateActive, Origin: "imported", Backend: "soft",
		KeySlot: 12345, Sealed: bytes.Repeat([]byte{0x3c}, 81),
		Policy: Policy{
			Provenance:  "imported on node gateway-01 from factory batch 7",
			Fingerprint: bytes.Repeat([]byte{0x77}, 32), KCV: "0f1e2d", Generation: 1,
		},
	}
}

// stored is p as the record keeps it: no handle, no boxes.
func stored(p *PSK) *PSK {
	c := p.clone()
	c.Handle = nil
	for i := range c.Finalized {
		c.Finalized[i].Box = nil
	}
	return c
}

func mustEncode(t testing.TB, p *PSK) []byte {
	t.Helper()
	raw, err := diskRecord(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestRecordCodecRoundTrip(t *testing.T) {
	for name, p := range map[string]*PSK{"full": fullRecord(), "typical": typicalRecord(),
		"minimal": {Identity: []byte{0}, Hash: importer.SHA256, State: StateActive}} {
		t.Run(name, func(t *testing.T) {
			raw := mustEncode(t, p)
			if raw[0] != recordVersion1 {
				t.Fatalf("first byte 0x%02x", raw[0])
			}
			if bytes.Contains(raw, []byte("never-written")) {
				t.Fatal("the handle or a box is in the record")
			}
			got, err := decodeRecord(raw)
			if err != nil {
				t.Fatal(err)
			}
			want := normalized(p)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
			}
			// The decoded record shares no memory with raw (bbolt's pages
			// are valid only inside their transaction).
			for i := range raw {
				raw[i] = 0xee
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatal("the decoded record changed with the buffer it was decoded from")
			}
		})
	}
}

// TestRecordCodecSameAsJSON: a record written as JSON before the binary
// form (diskRecord's json.Marshal of the record without handle and boxes)
// and the same record in binary decode to the same PSK, times and their
// location included; a JSON record from before the key slots keeps its
// handle (Open converts it).
func TestRecordCodecSameAsJSON(t *testing.T) {
	for name, p := range map[string]*PSK{"full": fullRecord(), "typical": typicalRecord()} {
		t.Run(name, func(t *testing.T) {
			old, err := json.Marshal(stored(p))
			if err != nil {
				t.Fatal(err)
			}
			fromJSON, err := decodeRecord(old)
			if err != nil {
				t.Fatal(err)
			}
			fromBinary, err := decodeRecord(mustEncode(t, p))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromJSON, fromBinary) {
				t.Fatalf("JSON and binary differ:\n  json %+v\nbinary %+v", fromJSON, fromBinary)
			}
			if fromBinary.Created.Location() != time.UTC || fromJSON.Created.Location() != time.UTC {
				t.Fatal("times not in UTC")
			}
		})
	}
	legacy := fullRecord()
	legacy.KeySlot, legacy.Sealed = 0, nil
	old, _ := json.Marshal(legacy)
	got, err := decodeRecord(old)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Handle, legacy.Handle) || !bytes.Equal(got.Finalized[0].Box, legacy.Finalized[0].Box) || !hasSecret(got) {
		t.Fatal("a JSON record from before the key slots lost its handle or boxes")
	}
}

// codecValue is a non-zero value of type t for the completeness test;
// enums get valid values different from baseRecord's. It fails the test
// for a kind it does not know, so that a new kind of field is noticed.
func codecValue(t *testing.T, typ reflect.Type, path string) reflect.Value {
	t.Helper()
	v := reflect.New(typ).Elem()
	switch typ {
	case reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(codecT0.Add(time.Duration(len(path)) * time.Hour)))
		return v
	case reflect.TypeFor[importer.Hash]():
		v.SetUint(uint64(importer.SHA384))
		return v
	case reflect.TypeFor[importer.Protocol]():
		v.SetUint(uint64(importer.DTLS13))
		return v
	case reflect.TypeFor[importer.KDF]():
		v.SetUint(uint64(importer.HKDFSHA384))
		return v
	case reflect.TypeFor[State]():
		v.SetString(string(StateRevoked))
		return v
	}
	switch typ.Kind() {
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(-1 - int64(len(path)))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(len(path)) | 1<<(typ.Bits()-1))
	case reflect.String:
		v.SetString("value of " + path)
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte("bytes of " + path))
			break
		}
		v.Set(reflect.MakeSlice(typ, 2, 2))
		for i := range 2 {
			v.Index(i).Set(codecValue(t, typ.Elem(), path+"[]"))
		}
	case reflect.Struct:
		for i := range typ.NumField() {
			v.Field(i).Set(codecValue(t, typ.Field(i).Type, path+"."+typ.Field(i).Name))
		}
	default:
		t.Fatalf("%s: no test value for a %s field: teach encodeRecord, decodeRecord and this test about it", path, typ)
	}
	return v
}

// TestRecordCodecEveryField sets each field of PSK and of its Policy in
// turn, on a record that is otherwise minimal, and requires the field to
// come back from the binary record unchanged, except Handle and the
// Finalized boxes, which must not come back at all. A field added later
// without codec support fails here.
func TestRecordCodecEveryField(t *testing.T) {
	base := func() *PSK { return &PSK{Identity: []byte("id"), Hash: importer.SHA256, State: StateActive} }
	type field struct {
		name string
		get  func(p *PSK) reflect.Value
	}
	var fields []field
	pskT := reflect.TypeFor[PSK]()
	unexported := 0
	for i := range pskT.NumField() {
		f := pskT.Field(i)
		if !f.IsExported() {
			// In-memory bookkeeping (disk, opened), never stored.
			unexported++
			continue
		}
		if f.Anonymous && f.Type == reflect.TypeFor[Policy]() {
			for j := range f.Type.NumField() {
				fields = append(fields, field{"Policy." + f.Type.Field(j).Name, func(p *PSK) reflect.Value {
					return reflect.ValueOf(p).Elem().Field(i).Field(j)
				}})
			}
			continue
		}
		fields = append(fields, field{f.Name, func(p *PSK) reflect.Value { return reflect.ValueOf(p).Elem().Field(i) }})
	}
	if len(fields) != pskT.NumField()-1-unexported+reflect.TypeFor[Policy]().NumField() {
		t.Fatalf("walked %d fields", len(fields))
	}
	for _, f := range fields {
		t.Run(f.name, func(t *testing.T) {
			p := base()
			val := codecValue(t, f.get(p).Type(), f.name)
			if reflect.DeepEqual(val.Interface(), f.get(p).Interface()) {
				t.Fatalf("test value equals the base record's")
			}
			f.get(p).Set(val)
			got, err := decodeRecord(mustEncode(t, p))
			if err != nil {
				t.Fatal(err)
			}
			back := f.get(got).Interface()
			switch f.name {
			case "Handle":
				if back != nil && len(back.([]byte)) != 0 {
					t.Fatal("the handle was written to the record")
				}
				return
			case "Policy.Finalized":
				for i, s := range back.([]Sealed) {
					if s.Box != nil {
						t.Fatalf("box %d was written to the record", i)
					}
					if s.Target != p.Finalized[i].Target || !bytes.Equal(s.Context, p.Finalized[i].Context) {
						t.Fatalf("finalized %d: got %+v", i, s)
					}
				}
				if len(back.([]Sealed)) != len(p.Finalized) {
					t.Fatal("finalized keys lost")
				}
				return
			}
			if !reflect.DeepEqual(back, val.Interface()) {
				t.Fatalf("got %#v, want %#v", back, val.Interface())
			}
			// Nothing else changed.
			b0 := base()
			f.get(got).Set(f.get(b0))
			if !reflect.DeepEqual(got, b0) {
				t.Fatalf("other fields changed: %+v", got)
			}
		})
	}
}

// putUvarintAfter replaces the uvarint that follows marker in raw by v.
func putUvarintAfter(t *testing.T, raw []byte, marker string, v uint64) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte(marker))
	if i < 0 {
		t.Fatalf("no %q in record", marker)
	}
	i += len(marker)
	_, n := binary.Uvarint(raw[i:])
	out := append(bytes.Clone(raw[:i]), binary.AppendUvarint(nil, v)...)
	return append(out, raw[i+n:]...)
}

func TestDecodeRecordRefuses(t *testing.T) {
	good := mustEncode(t, fullRecord())
	withFlags := func(extra uint64) []byte {
		f, n := binary.Uvarint(good[1:])
		return append(binary.AppendUvarint([]byte{recordVersion1}, f|extra), good[1+n:]...)
	}
	enc := func(f func(p *PSK)) []byte {
		p := typicalRecord()
		f(p)
		if checkEncodable(p) == nil {
			t.Fatal("checkEncodable accepts what the case expects refused")
		}
		return encodeRecord(p)
	}
	// head is a record with no flags up to its targets count.
	head := []byte{recordVersion1, recordFlagCreated, 1, 'a', byte(importer.SHA256), 0, 0, 0, 0}
	withTime := func(sec int64, nsec uint64) []byte {
		return binary.AppendUvarint(binary.AppendVarint(bytes.Clone(head), sec), nsec)
	}
	for _, c := range []struct {
		name, want string
		raw        []byte
	}{
		{"empty", "empty", nil},
		{"version 0", "unknown version 0x00", []byte{0}},
		{"version 2", "unknown version 0x02", append([]byte{2}, good[1:]...)},
		{"trailing byte", "1 bytes after the last field", append(bytes.Clone(good), 0)},
		{"unknown flag", "unknown flags 0x800", withFlags(1 << 11)},
		{"flags overflow", "flags: varint overflows", []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"identity longer than the record", "identity is 1099511627776 bytes, only 0 left", binary.AppendUvarint([]byte{1, 0}, 1<<40)},
		{"targets beyond the record", "1073741824 targets cannot fit", binary.AppendUvarint([]byte{1, 0, 1, 'a', 1, 0, 0, 0}, 1<<30)},
		{"unknown hash", "unknown hash 3", enc(func(p *PSK) { p.Hash = 3 })},
		{"hash zero", "unknown hash 0", enc(func(p *PSK) { p.Hash = 0 })},
		{"unknown state", "unknown state 0", enc(func(p *PSK) { p.State = "paused" })},
		{"legacy protocol", "target protocol 0x0303: external PSKs must not be imported for TLS 1.2", enc(func(p *PSK) { p.Targets[1].Protocol = 0x0303 })},
		{"unknown kdf", "target: unknown target KDF 0x0007", enc(func(p *PSK) { p.Targets[0].KDF = 7 })},
		{"finalized target", "finalized target", enc(func(p *PSK) { p.Finalized = []Sealed{{Target: Target{importer.TLS13, 0}}} })},
		{"time after 9999", "outside years 1-9999", enc(func(p *PSK) { p.NotAfter = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) })},
		{"time before year 1", "outside years 1-9999", withTime(minRecordUnix-1, 0)},
		{"nanoseconds", "nanoseconds 1000000000 out of range", withTime(0, 1e9)},
		{"zero time flagged", "zero time written as present", withTime(minRecordUnix, 0)},
		{"key slot", "key slot 8589934592 out of range", putUvarintAfter(t, mustEncode(t, typicalRecord()), "soft", 1<<33)},
		{"json", "JSON", []byte(`{"identity":"a`)},
		{"json type", "JSON", []byte(`{"hash":300}`)},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := decodeRecord(c.raw)
			if err == nil || p != nil {
				t.Fatalf("decoded: %+v", p)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q: want ErrInvalid and %q", err, c.want)
			}
		})
	}
	// Every truncation of a valid record is refused.
	for n := range len(good) {
		if p, err := decodeRecord(good[:n]); err == nil || !errors.Is(err, ErrInvalid) {
			t.Fatalf("prefix of %d of %d bytes: %+v, %v", n, len(good), p, err)
		}
	}
	if _, err := diskRecord(&PSK{Identity: []byte("x"), Hash: importer.SHA256}); err == nil || !errors.Is(err, ErrInvalid) {
		t.Fatalf("a record without a state was written: %v", err)
	}
}

// normalized is p as the binary record gives it back: no handle or boxes,
// empty slices nil, times in UTC.
func normalized(p *PSK) *PSK {
	c := stored(p)
	nilIfEmpty := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		return b
	}
	c.Identity, c.Sealed, c.Fingerprint = nilIfEmpty(c.Identity), nilIfEmpty(c.Sealed), nilIfEmpty(c.Fingerprint)
	c.RotatedFrom, c.RotatedTo = nilIfEmpty(c.RotatedFrom), nilIfEmpty(c.RotatedTo)
	if len(c.Targets) == 0 {
		c.Targets = nil
	}
	if len(c.Group) == 0 {
		c.Group = nil
	}
	if len(c.EntropyFindings) == 0 {
		c.EntropyFindings = nil
	}
	if len(c.IdentityFindings) == 0 {
		c.IdentityFindings = nil
	}
	if len(c.Finalized) == 0 {
		c.Finalized = nil
	}
	for i := range c.Finalized {
		c.Finalized[i].Context = nilIfEmpty(c.Finalized[i].Context)
	}
	for _, t := range recordTimes(c) {
		if !t.IsZero() {
			*t = t.UTC()
		}
	}
	return c
}

// FuzzDecodeRecord: decodeRecord never panics, refuses only with
// ErrInvalid, and whatever it accepts encodes to a record that decodes to
// the same PSK (for JSON input: the same PSK as the binary form holds it).
func FuzzDecodeRecord(f *testing.F) {
	for _, p := range []*PSK{fullRecord(), typicalRecord(), {Identity: []byte{1}, Hash: importer.SHA256, State: StateActive}} {
		f.Add(mustEncode(f, p))
		old, _ := json.Marshal(stored(p))
		f.Add(old)
	}
	legacy, _ := json.Marshal(fullRecord())
	f.Add(legacy)
	f.Add([]byte(`{"identity":"YQ==","hash":1,"state":"active","created":"2026-12-03T01:02:03+01:00","targets":[]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := decodeRecord(raw)
		if err != nil {
			if p != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("refused with %+v, %v", p, err)
			}
			return
		}
		want := p
		if raw[0] == '{' {
			if checkEncodable(p) != nil {
				return // the JSON form held what the binary cannot; diskRecord refuses it
			}
			want = normalized(p)
		} else if err := checkEncodable(p); err != nil {
			t.Fatalf("decoded a record diskRecord would refuse: %v", err)
		}
		again, err := decodeRecord(encodeRecord(p))
		if err != nil {
			t.Fatalf("re-encoded record refused: %v", err)
		}
		if !reflect.DeepEqual(again, want) {
			t.Fatalf("re-encoded record differs:\n got %+v\nwant %+v", again, want)
		}
	})
}

// BenchmarkRecordCodec: encoding and decoding one typical record (a soft
// import's shape), binary against the JSON form used before.
//
//	go test -run '^$' -bench BenchmarkRecordCodec -benchmem ./vault
func BenchmarkRecordCodec(b *testing.B) {
	p := typicalRecord()
	bin := mustEncode(b, p)
	js, err := json.Marshal(stored(p))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("binary/encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := diskRecord(p); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(bin)), "record-bytes")
	})
	b.Run("binary/decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeRecord(bin); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json/encode", func(b *testing.B) {
		for b.Loop() {
			// What diskRecord did before: copy, clear, marshal.
			c := *p
			c.Handle = nil
			if _, err := json.Marshal(&c); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(js)), "record-bytes")
	})
	b.Run("json/decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeRecord(js); err != nil {
				b.Fatal(err)
			}
		}
	})
	// gob, the rejected alternative (docs/DESIGN.md): each bbolt value is
	// a stream of its own, so every record carries its type description
	// and needs a fresh Encoder and Decoder.
	var gb bytes.Buffer
	if err := gob.NewEncoder(&gb).Encode(stored(p)); err != nil {
		b.Fatal(err)
	}
	b.Run("gob/encode", func(b *testing.B) {
		for b.Loop() {
			var w bytes.Buffer
			if err := gob.NewEncoder(&w).Encode(stored(p)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(gb.Len()), "record-bytes")
	})
	b.Run("gob/decode", func(b *testing.B) {
		for b.Loop() {
			var q PSK
			if err := gob.NewDecoder(bytes.NewReader(gb.Bytes())).Decode(&q); err != nil {
				b.Fatal(err)
			}
		}
	})
}
