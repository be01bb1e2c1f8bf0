package importer_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pskvault/pskvault/importer"
)

// Test failure messages name the vector and the field; they never print key
// material (EPSK, epskx, ipskx, MAC output) in any form.

// vector is one entry of testdata/importer/vectors.json, produced by
// testdata/importer/gen.sh with the OpenSSL 3 CLI (see README.md there).
type vector struct {
	Name             string `json:"name"`
	EPSKHash         string `json:"epsk_hash"`
	EPSK             string `json:"epsk"`
	ExternalIdentity string `json:"external_identity"`
	Context          string `json:"context"`
	Protocol         string `json:"protocol"`
	KDF              string `json:"kdf"`
	ImportedIdentity string `json:"imported_identity"`
	EPSKX            string `json:"epskx"`
	IPSKX            string `json:"ipskx"`
}

// decoded is a vector with hex decoded and names parsed.
type decoded struct {
	name                    string
	hash                    importer.Hash
	epsk, wire, epskx, ipsk []byte
	id                      importer.Identity
}

const vectorsPath = "../testdata/importer/vectors.json"

func readVectors(tb testing.TB) []vector {
	tb.Helper()
	raw, err := os.ReadFile(filepath.FromSlash(vectorsPath))
	if err != nil {
		tb.Fatalf("reading vectors: %v", err)
	}
	var file struct {
		Vectors []vector `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		tb.Fatalf("parsing vectors: %v", err)
	}
	if len(file.Vectors) == 0 {
		tb.Fatal("no vectors")
	}
	return file.Vectors
}

func loadVectors(tb testing.TB) []decoded {
	tb.Helper()
	var out []decoded
	for _, v := range readVectors(tb) {
		unhex := func(field, s string) []byte {
			b, err := hex.DecodeString(s)
			if err != nil {
				tb.Fatalf("%s: field %s is not hex", v.Name, field)
			}
			return b
		}
		h, err := importer.ParseHash(v.EPSKHash)
		if err != nil {
			tb.Fatalf("%s: %v", v.Name, err)
		}
		p, err := importer.ParseProtocol(v.Protocol)
		if err != nil {
			tb.Fatalf("%s: %v", v.Name, err)
		}
		k, err := importer.ParseKDF(v.KDF)
		if err != nil {
			tb.Fatalf("%s: %v", v.Name, err)
		}
		out = append(out, decoded{
			name:  v.Name,
			hash:  h,
			epsk:  unhex("epsk", v.EPSK),
			wire:  unhex("imported_identity", v.ImportedIdentity),
			epskx: unhex("epskx", v.EPSKX),
			ipsk:  unhex("ipskx", v.IPSKX),
			id: importer.Identity{
				External: unhex("external_identity", v.ExternalIdentity),
				Context:  unhex("context", v.Context),
				Protocol: p,
				KDF:      k,
			},
		})
	}
	return out
}

// TestVectorsCoverRequiredMatrix guards the vector file itself: every EPSK
// hash x protocol x target KDF, with empty and non-empty context, is present.
func TestVectorsCoverRequiredMatrix(t *testing.T) {
	type key struct {
		h   importer.Hash
		p   importer.Protocol
		k   importer.KDF
		ctx bool
	}
	seen := map[key]bool{}
	for _, v := range loadVectors(t) {
		seen[key{v.hash, v.id.Protocol, v.id.KDF, len(v.id.Context) > 0}] = true
	}
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		for _, p := range []importer.Protocol{importer.TLS13, importer.DTLS13} {
			for _, k := range []importer.KDF{importer.HKDFSHA256, importer.HKDFSHA384} {
				for _, ctx := range []bool{false, true} {
					if !seen[key{h, p, k, ctx}] {
						t.Errorf("no vector for epsk %v, %v, %v, non-empty context %v", h, p, k, ctx)
					}
				}
			}
		}
	}
}

// RFC 9258 section 3: ImportedIdentity wire encoding, published GnuTLS vector.
func TestRFC9258_ImportedIdentityEncoding_GnuTLSVector(t *testing.T) {
	id := importer.Identity{
		External: []byte{0xca, 0xfe, 0xca, 0xfe},
		Context:  []byte{0xde, 0xad, 0xbe, 0xef},
		Protocol: importer.TLS13,
		KDF:      importer.HKDFSHA256,
	}
	want, _ := hex.DecodeString("0004cafecafe0004deadbeef03040001")
	got, err := id.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	// The ImportedIdentity is public wire data, so printing it is fine.
	if !bytes.Equal(got, want) {
		t.Fatalf("Marshal = %x, want %x", got, want)
	}
}

// RFC 9258 section 4.1: epskx, ipskx and the ImportedIdentity through Import.
func TestRFC9258_Section4_1_ImportMatchesVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			wire, ipskx, err := importer.Import(v.hash, v.epsk, v.id)
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if !bytes.Equal(wire, v.wire) {
				t.Errorf("ImportedIdentity differs from vector")
			}
			if len(ipskx) != v.id.KDF.OutputLen() {
				t.Errorf("ipskx is %d bytes, want L = %d", len(ipskx), v.id.KDF.OutputLen())
			}
			if !bytes.Equal(ipskx, v.ipsk) {
				t.Errorf("ipskx differs from vector")
			}
		})
	}
}

// RFC 9258 section 4.1 split as the hardware path runs it: Extract, then
// NewPlan + Expand with the MAC under the PRK.
func TestRFC9258_Section4_1_ExtractPlanExpandMatchesVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			prk, err := importer.Extract(v.hash, v.epsk)
			if err != nil {
				t.Fatalf("Extract: %v", err)
			}
			if !bytes.Equal(prk, v.epskx) {
				t.Errorf("epskx differs from vector")
			}
			plan, err := importer.NewPlan(v.hash, v.id)
			if err != nil {
				t.Fatalf("NewPlan: %v", err)
			}
			if !bytes.Equal(plan.ImportedIdentity(), v.wire) {
				t.Errorf("Plan.ImportedIdentity differs from vector")
			}
			ipskx, err := plan.Expand(importer.SoftwareMAC(v.hash, prk))
			if err != nil {
				t.Fatalf("Expand: %v", err)
			}
			if !bytes.Equal(ipskx, v.ipsk) {
				t.Errorf("ipskx differs from vector")
			}
			if cap(ipskx) != len(ipskx) {
				t.Errorf("ipskx has cap %d > len %d: appends would expose the wiped tail", cap(ipskx), len(ipskx))
			}
		})
	}
}

// RFC 8446 section 7.1 as used by RFC 9258 section 4.1: HkdfLabel layout,
// prefix by target protocol, L by target KDF, context = Hash(ImportedIdentity)
// with the EPSK's hash (not the target KDF's).
func TestRFC9258_Section4_1_HkdfLabelLayout(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			plan, err := importer.NewPlan(v.hash, v.id)
			if err != nil {
				t.Fatalf("NewPlan: %v", err)
			}
			var ctx []byte
			switch v.hash {
			case importer.SHA256:
				s := sha256.Sum256(v.wire)
				ctx = s[:]
			case importer.SHA384:
				s := sha512.Sum384(v.wire)
				ctx = s[:]
			}
			prefix := "tls13 "
			if v.id.Protocol == importer.DTLS13 {
				prefix = "dtls13"
			}
			full := prefix + "derived psk"
			var want []byte
			want = binary.BigEndian.AppendUint16(want, uint16(v.id.KDF.OutputLen()))
			want = append(want, byte(len(full)))
			want = append(want, full...)
			want = append(want, byte(len(ctx)))
			want = append(want, ctx...)
			got := plan.HkdfLabel()
			if !bytes.Equal(got, want) {
				t.Errorf("HkdfLabel = %x, want %x", got, want) // public, non-secret
			}
			got[0] ^= 0xff
			if bytes.Equal(plan.HkdfLabel(), got) {
				t.Errorf("HkdfLabel returned the plan's own buffer, not a copy")
			}
		})
	}
}

// countingMAC wraps SoftwareMAC and records every input.
type countingMAC struct {
	inner  importer.MAC
	inputs [][]byte
	mu     sync.Mutex
}

func (c *countingMAC) mac(data []byte) ([]byte, error) {
	c.mu.Lock()
	c.inputs = append(c.inputs, append([]byte{}, data...))
	c.mu.Unlock()
	return c.inner(data)
}

// RFC 5869 section 2.3 within RFC 9258 section 4.1: L from the target KDF can
// exceed the EPSK's HashLen, so a SHA-256 EPSK with an HKDF_SHA384 target
// needs two blocks, T(2) = HMAC(PRK, T(1) || info || 0x02).
func TestRFC9258_Section4_1_ExpandBlockCount(t *testing.T) {
	wantCalls := map[[2]int]int{
		{int(importer.SHA256), int(importer.HKDFSHA256)}: 1,
		{int(importer.SHA256), int(importer.HKDFSHA384)}: 2,
		{int(importer.SHA384), int(importer.HKDFSHA256)}: 1,
		{int(importer.SHA384), int(importer.HKDFSHA384)}: 1,
	}
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			want := wantCalls[[2]int{int(v.hash), int(v.id.KDF)}]
			prk, err := importer.Extract(v.hash, v.epsk)
			if err != nil {
				t.Fatalf("Extract: %v", err)
			}
			plan, err := importer.NewPlan(v.hash, v.id)
			if err != nil {
				t.Fatalf("NewPlan: %v", err)
			}
			if plan.Blocks() != want {
				t.Errorf("Blocks() = %d, want %d", plan.Blocks(), want)
			}
			c := &countingMAC{inner: importer.SoftwareMAC(v.hash, prk)}
			ipskx, err := plan.Expand(c.mac)
			if err != nil {
				t.Fatalf("Expand: %v", err)
			}
			if len(c.inputs) != want {
				t.Fatalf("Expand made %d MAC calls, want %d", len(c.inputs), want)
			}
			if !bytes.Equal(ipskx, v.ipsk) {
				t.Errorf("ipskx differs from vector")
			}
			info := plan.HkdfLabel()
			n := v.hash.Size()
			for i, in := range c.inputs {
				var wantIn []byte
				if i > 0 {
					wantIn = append(wantIn, ipskx[(i-1)*n:i*n]...) // T(i-1)
				}
				wantIn = append(wantIn, info...)
				wantIn = append(wantIn, byte(i+1))
				if !bytes.Equal(in, wantIn) {
					t.Errorf("MAC call %d input is not T(%d) || HkdfLabel || 0x%02x", i+1, i, i+1)
				}
			}
		})
	}
}

// A backend MAC may hand back the same buffer every call; Expand must copy.
func TestExpandToleratesMACReusingItsOutputBuffer(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			prk, _ := importer.Extract(v.hash, v.epsk)
			plan, err := importer.NewPlan(v.hash, v.id)
			if err != nil {
				t.Fatalf("NewPlan: %v", err)
			}
			inner := importer.SoftwareMAC(v.hash, prk)
			shared := make([]byte, v.hash.Size())
			ipskx, err := plan.Expand(func(data []byte) ([]byte, error) {
				t, err := inner(data)
				copy(shared, t)
				return shared, err
			})
			if err != nil {
				t.Fatalf("Expand: %v", err)
			}
			if !bytes.Equal(ipskx, v.ipsk) {
				t.Errorf("ipskx differs from vector")
			}
		})
	}
}

var errBackend = errors.New("backend: token removed")

// A MAC failure on any block is returned (wrapped) and no partial key leaks.
func TestExpandPropagatesMACError(t *testing.T) {
	epsk := make([]byte, 32)
	id := importer.Identity{External: []byte("id"), Protocol: importer.TLS13, KDF: importer.HKDFSHA384}
	plan, err := importer.NewPlan(importer.SHA256, id) // 2 blocks
	if err != nil {
		t.Fatalf("NewPlan: %v", err)
	}
	prk, _ := importer.Extract(importer.SHA256, epsk)
	inner := importer.SoftwareMAC(importer.SHA256, prk)
	for failAt := 1; failAt <= plan.Blocks(); failAt++ {
		calls := 0
		out, err := plan.Expand(func(data []byte) ([]byte, error) {
			calls++
			if calls == failAt {
				return nil, errBackend
			}
			return inner(data)
		})
		if !errors.Is(err, errBackend) {
			t.Errorf("failing block %d: err = %v, want wrapping errBackend", failAt, err)
		}
		if out != nil {
			t.Errorf("failing block %d: got %d output bytes alongside an error", failAt, len(out))
		}
		if calls != failAt {
			t.Errorf("failing block %d: Expand kept calling the MAC (%d calls)", failAt, calls)
		}
	}
}

// A MAC returning anything but HashLen bytes is rejected with ErrBadPRK.
func TestExpandRejectsWrongLengthMACOutput(t *testing.T) {
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		id := importer.Identity{External: []byte("id"), Protocol: importer.TLS13, KDF: importer.HKDFSHA384}
		plan, err := importer.NewPlan(h, id)
		if err != nil {
			t.Fatalf("NewPlan: %v", err)
		}
		for _, n := range []int{0, 1, h.Size() - 1, h.Size() + 1, 64, 128} {
			if n == h.Size() {
				continue
			}
			out, err := plan.Expand(func([]byte) ([]byte, error) { return make([]byte, n), nil })
			if !errors.Is(err, importer.ErrBadPRK) {
				t.Errorf("%v, %d-byte MAC output: err = %v, want ErrBadPRK", h, n, err)
			}
			if out != nil {
				t.Errorf("%v, %d-byte MAC output: got output alongside an error", h, n)
			}
		}
		// Wrong length on the second block only (SHA-256 EPSK, 2 blocks).
		if h == importer.SHA256 {
			calls := 0
			_, err := plan.Expand(func([]byte) ([]byte, error) {
				calls++
				if calls == 2 {
					return make([]byte, 31), nil
				}
				return make([]byte, 32), nil
			})
			if !errors.Is(err, importer.ErrBadPRK) {
				t.Errorf("short second block: err = %v, want ErrBadPRK", err)
			}
		}
	}
}

func TestSoftwareMACRejectsWrongPRKLength(t *testing.T) {
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		for _, n := range []int{0, 16, h.Size() - 1, h.Size() + 1} {
			_, err := importer.SoftwareMAC(h, make([]byte, n))([]byte("x"))
			if !errors.Is(err, importer.ErrBadPRK) {
				t.Errorf("%v with %d-byte PRK: err = %v, want ErrBadPRK", h, n, err)
			}
		}
	}
}

// RFC 9258 section 3: the ImportedIdentity round-trips exactly.
func TestRFC9258_Section3_MarshalParseRoundTrip(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			id, err := importer.ParseIdentity(v.wire)
			if err != nil {
				t.Fatalf("ParseIdentity: %v", err)
			}
			if !bytes.Equal(id.External, v.id.External) || !bytes.Equal(id.Context, v.id.Context) ||
				id.Protocol != v.id.Protocol || id.KDF != v.id.KDF {
				t.Errorf("parsed identity differs from vector fields")
			}
			again, err := id.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if !bytes.Equal(again, v.wire) {
				t.Errorf("re-marshalled ImportedIdentity differs")
			}
			// The parsed slices are copies: scribbling on the input is harmless.
			in := append([]byte{}, v.wire...)
			id2, err := importer.ParseIdentity(in)
			if err != nil {
				t.Fatalf("ParseIdentity: %v", err)
			}
			for i := range in {
				in[i] ^= 0xff
			}
			if !bytes.Equal(id2.External, v.id.External) || !bytes.Equal(id2.Context, v.id.Context) {
				t.Errorf("ParseIdentity result aliases its input")
			}
		})
	}
}

func TestRFC9258_Section3_RoundTripAtLengthLimits(t *testing.T) {
	cases := []struct {
		name        string
		ext, ctx    int
		wantWireLen int
	}{
		{"one-byte identity, empty context", 1, 0, 9},
		{"largest identity (serialization exactly 65535)", importer.MaxIdentityLen - 8, 0, importer.MaxIdentityLen},
		{"largest context (serialization exactly 65535)", 1, importer.MaxIdentityLen - 9, importer.MaxIdentityLen},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := importer.Identity{
				External: bytes.Repeat([]byte{'i'}, c.ext),
				Context:  bytes.Repeat([]byte{'c'}, c.ctx),
				Protocol: importer.DTLS13,
				KDF:      importer.HKDFSHA384,
			}
			wire, err := id.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if len(wire) != c.wantWireLen {
				t.Fatalf("serialization is %d bytes, want %d", len(wire), c.wantWireLen)
			}
			back, err := importer.ParseIdentity(wire)
			if err != nil {
				t.Fatalf("ParseIdentity: %v", err)
			}
			again, _ := back.Marshal()
			if !bytes.Equal(again, wire) {
				t.Errorf("round trip differs")
			}
			if _, _, err := importer.Import(importer.SHA256, make([]byte, 32), id); err != nil {
				t.Errorf("Import: %v", err)
			}
		})
	}
}

// RFC 9258 section 3 / RFC 8446 section 3.4: strict decoding. Every proper
// prefix of a valid serialization is rejected as malformed.
func TestRFC9258_Section3_ParseRejectsTruncationAtEveryLength(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			for n := 0; n < len(v.wire); n++ {
				id, err := importer.ParseIdentity(v.wire[:n])
				if !errors.Is(err, importer.ErrMalformedIdentity) {
					t.Errorf("truncated to %d of %d bytes: err = %v, want ErrMalformedIdentity", n, len(v.wire), err)
				}
				if id.External != nil || id.Context != nil {
					t.Errorf("truncated to %d bytes: non-zero Identity returned with error", n)
				}
			}
		})
	}
}

func TestRFC9258_Section3_ParseRejectsTrailingBytes(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			for _, extra := range [][]byte{{0}, {0, 0}, {0xff, 0xff, 0xff}, v.wire} {
				in := append(append([]byte{}, v.wire...), extra...)
				if _, err := importer.ParseIdentity(in); !errors.Is(err, importer.ErrMalformedIdentity) {
					t.Errorf("%d trailing bytes: err = %v, want ErrMalformedIdentity", len(extra), err)
				}
			}
		})
	}
}

func wireOf(ext, ctx []byte, proto, kdf uint16) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint16(b, uint16(len(ext)))
	b = append(b, ext...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ctx)))
	b = append(b, ctx...)
	b = binary.BigEndian.AppendUint16(b, proto)
	return binary.BigEndian.AppendUint16(b, kdf)
}

// RFC 9258 section 3: external_identity<1..2^16-1>, context<0..2^16-1>, and
// the whole serialization is a PskIdentity.identity<1..2^16-1>.
func TestRFC9258_Section3_RejectsBadLengths(t *testing.T) {
	big := func(n int) []byte { return bytes.Repeat([]byte{'x'}, n) }
	good := func(ext, ctx []byte) importer.Identity {
		return importer.Identity{External: ext, Context: ctx, Protocol: importer.TLS13, KDF: importer.HKDFSHA256}
	}
	marshalCases := []struct {
		name string
		id   importer.Identity
	}{
		{"nil external identity", good(nil, nil)},
		{"empty external identity", good([]byte{}, []byte("ctx"))},
		{"serialization 65536 bytes", good(big(importer.MaxIdentityLen-7), nil)},
		{"external identity 65535 bytes", good(big(importer.MaxIdentityLen), nil)},
		{"external identity 65536 bytes (u16 would wrap to 0)", good(big(1<<16), nil)},
		{"external identity 65537 bytes (u16 would wrap to 1)", good(big(1<<16+1), nil)},
		{"context 65536 bytes (u16 would wrap)", good([]byte("a"), big(1<<16))},
		{"identity+context over limit", good(big(40000), big(30000))},
	}
	for _, c := range marshalCases {
		t.Run("Marshal/"+c.name, func(t *testing.T) {
			if _, err := c.id.Marshal(); !errors.Is(err, importer.ErrMalformedIdentity) {
				t.Errorf("Marshal: err = %v, want ErrMalformedIdentity", err)
			}
			if _, err := importer.NewPlan(importer.SHA256, c.id); !errors.Is(err, importer.ErrMalformedIdentity) {
				t.Errorf("NewPlan: err = %v, want ErrMalformedIdentity", err)
			}
			if _, _, err := importer.Import(importer.SHA256, make([]byte, 32), c.id); !errors.Is(err, importer.ErrMalformedIdentity) {
				t.Errorf("Import: err = %v, want ErrMalformedIdentity", err)
			}
		})
	}
	parseCases := []struct {
		name string
		wire []byte
	}{
		{"empty input", nil},
		{"empty external identity", wireOf(nil, nil, 0x0304, 0x0001)},
		{"empty external identity with context", wireOf(nil, []byte("ctx"), 0x0304, 0x0001)},
		{"oversize serialization 65543 bytes", wireOf(big(importer.MaxIdentityLen), nil, 0x0304, 0x0001)},
		{"oversize serialization 65536 bytes", wireOf(big(importer.MaxIdentityLen-7), nil, 0x0304, 0x0001)},
		{"length claims more than present", []byte{0xff, 0xff, 'a', 0, 0, 3, 4, 0, 1}},
		{"context length claims more than present", []byte{0, 1, 'a', 0, 5, 3, 4, 0, 1}},
	}
	for _, c := range parseCases {
		t.Run("ParseIdentity/"+c.name, func(t *testing.T) {
			if _, err := importer.ParseIdentity(c.wire); !errors.Is(err, importer.ErrMalformedIdentity) {
				t.Errorf("err = %v, want ErrMalformedIdentity", err)
			}
		})
	}
	// Oversize input is refused even when it is garbage from the first byte.
	if _, err := importer.ParseIdentity(make([]byte, 1<<20)); !errors.Is(err, importer.ErrMalformedIdentity) {
		t.Errorf("1 MiB input: err = %v, want ErrMalformedIdentity", err)
	}
}

// RFC 9258 section 4.1: "External PSKs MUST NOT be imported for (D)TLS 1.2
// or prior versions"; other unknown protocols and KDFs are never defaulted.
func TestRFC9258_Section4_1_RejectsLegacyAndUnknownTargets(t *testing.T) {
	cases := []struct {
		name  string
		proto uint16
		kdf   uint16
		want  error
		not   error
	}{
		{"TLS 1.2", 0x0303, 0x0001, importer.ErrLegacyProtocol, importer.ErrUnknownProtocol},
		{"TLS 1.1", 0x0302, 0x0001, importer.ErrLegacyProtocol, importer.ErrUnknownProtocol},
		{"TLS 1.0", 0x0301, 0x0002, importer.ErrLegacyProtocol, importer.ErrUnknownProtocol},
		{"SSL 3.0", 0x0300, 0x0001, importer.ErrLegacyProtocol, importer.ErrUnknownProtocol},
		{"DTLS 1.2", 0xfefd, 0x0001, importer.ErrLegacyProtocol, importer.ErrUnknownProtocol},
		{"DTLS 1.0", 0xfeff, 0x0001, importer.ErrLegacyProtocol, importer.ErrUnknownProtocol},
		{"protocol 0x0000", 0x0000, 0x0001, importer.ErrUnknownProtocol, importer.ErrLegacyProtocol},
		{"protocol 0x0305", 0x0305, 0x0001, importer.ErrUnknownProtocol, importer.ErrLegacyProtocol},
		{"protocol 0xfefb", 0xfefb, 0x0001, importer.ErrUnknownProtocol, importer.ErrLegacyProtocol},
		{"protocol 0x7f1c (TLS 1.3 draft 28)", 0x7f1c, 0x0001, importer.ErrUnknownProtocol, importer.ErrLegacyProtocol},
		{"protocol 0xffff", 0xffff, 0x0001, importer.ErrUnknownProtocol, importer.ErrLegacyProtocol},
		{"KDF 0x0000", 0x0304, 0x0000, importer.ErrUnknownKDF, nil},
		{"KDF 0x0003", 0x0304, 0x0003, importer.ErrUnknownKDF, nil},
		{"KDF 0xffff", 0xfefc, 0xffff, importer.ErrUnknownKDF, nil},
		{"KDF 0x0100 (byte-swapped 0x0001)", 0x0304, 0x0100, importer.ErrUnknownKDF, nil},
		{"protocol 0x0403 (byte-swapped TLS 1.3)", 0x0403, 0x0001, importer.ErrUnknownProtocol, importer.ErrLegacyProtocol},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := importer.Identity{External: []byte("id"), Context: []byte("ctx"),
				Protocol: importer.Protocol(c.proto), KDF: importer.KDF(c.kdf)}
			check := func(where string, err error) {
				t.Helper()
				if !errors.Is(err, c.want) {
					t.Errorf("%s: err = %v, want %v", where, err, c.want)
				}
				if c.not != nil && errors.Is(err, c.not) {
					t.Errorf("%s: err also matches %v", where, c.not)
				}
				if errors.Is(err, importer.ErrMalformedIdentity) {
					t.Errorf("%s: err is reported as malformed, want the specific sentinel", where)
				}
			}
			_, err := importer.ParseIdentity(wireOf(id.External, id.Context, c.proto, c.kdf))
			check("ParseIdentity", err)
			_, err = id.Marshal()
			check("Marshal", err)
			check("Identity.Check", id.Check())
			_, err = importer.NewPlan(importer.SHA256, id)
			check("NewPlan", err)
			_, _, err = importer.Import(importer.SHA384, make([]byte, 48), id)
			check("Import", err)
		})
	}
}

func TestRejectsUnknownEPSKHash(t *testing.T) {
	id := importer.Identity{External: []byte("id"), Protocol: importer.TLS13, KDF: importer.HKDFSHA256}
	for _, h := range []importer.Hash{0, 3, 255} {
		if h.Valid() || h.Size() != 0 || h.New() != nil {
			t.Errorf("%v: reported as a supported hash", h)
		}
		if _, err := importer.Extract(h, make([]byte, 32)); !errors.Is(err, importer.ErrUnknownHash) {
			t.Errorf("Extract(%v): err = %v, want ErrUnknownHash", h, err)
		}
		if _, err := importer.NewPlan(h, id); !errors.Is(err, importer.ErrUnknownHash) {
			t.Errorf("NewPlan(%v): err = %v, want ErrUnknownHash", h, err)
		}
		if _, _, err := importer.Import(h, make([]byte, 32), id); !errors.Is(err, importer.ErrUnknownHash) {
			t.Errorf("Import(%v): err = %v, want ErrUnknownHash", h, err)
		}
	}
}

// NewPlan must not alias the caller's Identity bytes in the wire form.
func TestNewPlanCopiesIdentity(t *testing.T) {
	id := importer.Identity{External: []byte("id"), Context: []byte("ctx"), Protocol: importer.TLS13, KDF: importer.HKDFSHA256}
	plan, err := importer.NewPlan(importer.SHA256, id)
	if err != nil {
		t.Fatal(err)
	}
	before := append([]byte{}, plan.ImportedIdentity()...)
	label := plan.HkdfLabel()
	id.External[0] = 'X'
	id.Context[0] = 'X'
	if !bytes.Equal(plan.ImportedIdentity(), before) || !bytes.Equal(plan.HkdfLabel(), label) {
		t.Errorf("plan changed when the caller's identity bytes changed")
	}
}

// A Plan is read-only once built: concurrent Expand calls are safe (run with -race).
func TestPlanExpandConcurrent(t *testing.T) {
	for _, v := range loadVectors(t) {
		prk, _ := importer.Extract(v.hash, v.epsk)
		plan, err := importer.NewPlan(v.hash, v.id)
		if err != nil {
			t.Fatalf("%s: NewPlan: %v", v.name, err)
		}
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for range 8 {
			wg.Go(func() {
				for range 20 {
					out, err := plan.Expand(importer.SoftwareMAC(v.hash, prk))
					if err != nil || !bytes.Equal(out, v.ipsk) {
						errs <- v.name
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for name := range errs {
			t.Errorf("%s: concurrent Expand gave a wrong result or error", name)
		}
	}
}

func TestParseHash(t *testing.T) {
	cases := []struct {
		in   string
		want importer.Hash
		err  error
	}{
		{"sha256", importer.SHA256, nil},
		{"SHA256", importer.SHA256, nil},
		{"sha-256", importer.SHA256, nil},
		{"", importer.SHA256, nil}, // RFC 9258 section 4.1: SHA-256 when the EPSK names none
		{"sha384", importer.SHA384, nil},
		{"SHA-384", importer.SHA384, nil},
		{"sha512", 0, importer.ErrUnknownHash},
		{"sha1", 0, importer.ErrUnknownHash},
		{"md5", 0, importer.ErrUnknownHash},
		{" sha256", 0, importer.ErrUnknownHash},
	}
	for _, c := range cases {
		got, err := importer.ParseHash(c.in)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("ParseHash(%q): err = %v, want %v", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseHash(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		if got, err := importer.ParseHash(h.String()); err != nil || got != h {
			t.Errorf("ParseHash(%v.String()) = %v, %v", h, got, err)
		}
	}
	if importer.SHA256.Size() != 32 || importer.SHA384.Size() != 48 {
		t.Errorf("hash sizes wrong")
	}
}

func TestParseProtocol(t *testing.T) {
	cases := []struct {
		in   string
		want importer.Protocol
		err  error
	}{
		{"tls1.3", importer.TLS13, nil},
		{"TLS13", importer.TLS13, nil},
		{"dtls1.3", importer.DTLS13, nil},
		{"DTLS13", importer.DTLS13, nil},
		{"tls1.2", 0, importer.ErrLegacyProtocol},
		{"tls12", 0, importer.ErrLegacyProtocol},
		{"tls1.1", 0, importer.ErrLegacyProtocol},
		{"tls1.0", 0, importer.ErrLegacyProtocol},
		{"dtls1.2", 0, importer.ErrLegacyProtocol},
		{"dtls1.0", 0, importer.ErrLegacyProtocol},
		{"", 0, importer.ErrUnknownProtocol}, // never defaulted
		{"tls1.4", 0, importer.ErrUnknownProtocol},
		{"ssl3", 0, importer.ErrUnknownProtocol},
	}
	for _, c := range cases {
		got, err := importer.ParseProtocol(c.in)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("ParseProtocol(%q): err = %v, want %v", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseProtocol(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, p := range []importer.Protocol{importer.TLS13, importer.DTLS13} {
		if got, err := importer.ParseProtocol(p.String()); err != nil || got != p {
			t.Errorf("ParseProtocol(%v.String()) = %v, %v", p, got, err)
		}
	}
	if uint16(importer.TLS13) != 0x0304 || uint16(importer.DTLS13) != 0xfefc {
		t.Errorf("protocol codes wrong")
	}
}

func TestParseKDF(t *testing.T) {
	cases := []struct {
		in   string
		want importer.KDF
		err  error
	}{
		{"sha256", importer.HKDFSHA256, nil},
		{"HKDF_SHA256", importer.HKDFSHA256, nil},
		{"hkdf-sha256", importer.HKDFSHA256, nil},
		{"sha384", importer.HKDFSHA384, nil},
		{"HKDF_SHA384", importer.HKDFSHA384, nil},
		{"hkdf-sha384", importer.HKDFSHA384, nil},
		{"", 0, importer.ErrUnknownKDF}, // never defaulted
		{"hkdf_sha512", 0, importer.ErrUnknownKDF},
		{"hkdf_sha1", 0, importer.ErrUnknownKDF},
	}
	for _, c := range cases {
		got, err := importer.ParseKDF(c.in)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("ParseKDF(%q): err = %v, want %v", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseKDF(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, k := range []importer.KDF{importer.HKDFSHA256, importer.HKDFSHA384} {
		if got, err := importer.ParseKDF(k.String()); err != nil || got != k {
			t.Errorf("ParseKDF(%v.String()) = %v, %v", k, got, err)
		}
	}
	if importer.HKDFSHA256.OutputLen() != 32 || importer.HKDFSHA384.OutputLen() != 48 {
		t.Errorf("KDF output lengths wrong")
	}
	if uint16(importer.HKDFSHA256) != 0x0001 || uint16(importer.HKDFSHA384) != 0x0002 {
		t.Errorf("KDF codes wrong")
	}
}

// A Plan not built by NewPlan must never yield a key: before the guard in
// Expand, a zero Plan with Hash set returned a 0-byte ipskx and a nil error,
// and a zero Plan panicked dividing by HashLen 0.
func TestExpandRejectsPlanNotBuiltByNewPlan(t *testing.T) {
	mac := importer.SoftwareMAC(importer.SHA256, make([]byte, 32))
	for _, p := range []*importer.Plan{nil, {}} {
		out, err := p.Expand(mac)
		if err == nil || out != nil {
			t.Errorf("Expand on %+v: got %d bytes, err %v; want an error and no key", p, len(out), err)
		}
	}
}

// The T(i) blocks a MAC hands back are key material (for a one-block key,
// T(1) is ipskx itself): Expand wipes them once copied, and on failure it
// wipes the input buffer that holds T(i-1).
func TestExpandWipesMACOutputsAndBuffers(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			prk, _ := importer.Extract(v.hash, v.epsk)
			plan, err := importer.NewPlan(v.hash, v.id)
			if err != nil {
				t.Fatal(err)
			}
			inner := importer.SoftwareMAC(v.hash, prk)
			var outs [][]byte
			ipskx, err := plan.Expand(func(data []byte) ([]byte, error) {
				o, err := inner(data)
				outs = append(outs, o)
				return o, err
			})
			if err != nil || !bytes.Equal(ipskx, v.ipsk) {
				t.Fatalf("Expand: %v", err)
			}
			for i, o := range outs {
				if !bytes.Equal(o, make([]byte, len(o))) {
					t.Errorf("T(%d) returned by the MAC was not wiped", i+1)
				}
			}
			if plan.Blocks() < 2 {
				return
			}
			var inputs [][]byte
			calls := 0
			_, err = plan.Expand(func(data []byte) ([]byte, error) {
				calls++
				inputs = append(inputs, data)
				if calls == 2 {
					return nil, errBackend
				}
				return inner(data)
			})
			if !errors.Is(err, errBackend) {
				t.Fatalf("Expand: %v", err)
			}
			n := v.hash.Size()
			if last := inputs[len(inputs)-1]; !bytes.Equal(last[:n], make([]byte, n)) {
				t.Error("after a failed block the input buffer still holds T(1)")
			}
		})
	}
}

// importer.HMAC is HMAC: it agrees with crypto/hmac for keys shorter than,
// equal to and longer than the block size, on both hashes.
func TestHMACMatchesCryptoHMAC(t *testing.T) {
	for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
		for _, n := range []int{0, 1, 32, 48, 64, 127, 128, 129, 300} {
			key := make([]byte, n)
			for i := range key {
				key[i] = byte(i*7 + n)
			}
			data := []byte("some data to authenticate, longer than nothing")
			m := hmac.New(h.New(), key)
			m.Write(data)
			if got := importer.HMAC(h, key, data); !bytes.Equal(got, m.Sum(nil)) {
				t.Fatalf("%v, %d-byte key: mismatch", h, n)
			}
		}
	}
	if importer.HMAC(importer.Hash(0), []byte("k"), nil) != nil {
		t.Fatal("unknown hash gave a MAC")
	}
	if s := importer.SecretSHA256([]byte("abc")); hex.EncodeToString(s[:]) != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatal("SecretSHA256 mismatch")
	}
}
