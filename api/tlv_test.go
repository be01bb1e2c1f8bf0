package api

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// tlvCall serves one request as root on the admin socket.
func tlvCall(t *testing.T, s *Server, path, ctype, accept string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	req = req.WithContext(context.WithValue(context.WithValue(req.Context(), keyCaller, &vault.Caller{UID: 0}), keySocket, SocketAdmin))
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// TestBinaryMatchesJSON: lookup, derive and offers in the binary form give
// the same key, imported identity and policy as the JSON form, in every
// combination of request and answer form.
func TestBinaryMatchesJSON(t *testing.T) {
	s := NewServerWith(testVault(t), Options{})
	ctxb := []byte{1, 2}
	wire, _ := importer.Identity{External: []byte("fz"), Context: ctxb, Protocol: importer.TLS13, KDF: importer.HKDFSHA384}.Marshal()

	rec := tlvCall(t, s, "/v1/derive", "application/json", "", []byte(`{"identity":"fz","context_hex":"0102","protocol":"tls1.3","kdf":"sha384"}`))
	if rec.Code != 200 {
		t.Fatalf("JSON derive: %d %s", rec.Code, rec.Body)
	}
	var want DeriveResponse
	json.Unmarshal(rec.Body.Bytes(), &want)
	wantKey, _ := hex.DecodeString(want.IPSKX)

	check := func(name string, k BinKey, role byte) {
		t.Helper()
		if !bytes.Equal(k.IPSKX, wantKey) {
			t.Errorf("%s: ipskx mismatch", name)
		}
		if !bytes.Equal(k.ImportedIdentity, wire) || !bytes.Equal(k.Identity, []byte("fz")) || !bytes.Equal(k.Context, ctxb) {
			t.Errorf("%s: identity fields %x %q %x", name, k.ImportedIdentity, k.Identity, k.Context)
		}
		if k.Protocol != 0x0304 || k.KDF != 2 || k.Hash != 1 || k.Role != role || k.Generation != 1 {
			t.Errorf("%s: target %x/%x hash %d role %d gen %d", name, k.Protocol, k.KDF, k.Hash, k.Role, k.Generation)
		}
		if k.Flags != FlagDHERequired || k.MaxEarlyData != 0 || !k.NotAfter.IsZero() {
			t.Errorf("%s: policy flags %b max_early %d not_after %v", name, k.Flags, k.MaxEarlyData, k.NotAfter)
		}
	}
	dreq := BinRequest{Identity: []byte("fz"), Context: ctxb, HasContext: true, Protocol: 0x0304, KDF: 2}.Marshal()
	for _, ct := range []string{ContentTypeTLV, ContentTypeTLV + "; charset=binary"} {
		rec = tlvCall(t, s, "/v1/derive", ct, ContentTypeTLV, dreq)
		if rec.Code != 200 || rec.Header().Get("Content-Type") != ContentTypeTLV {
			t.Fatalf("binary derive: %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
		k, err := ParseBinKey(rec.Body.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		check("derive", k, RoleClient)
	}
	// binary request, JSON answer
	rec = tlvCall(t, s, "/v1/derive", ContentTypeTLV, "", dreq)
	var got DeriveResponse
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &got) != nil || got.IPSKX != want.IPSKX {
		t.Fatalf("binary request, JSON answer: %d", rec.Code)
	}
	// JSON request, binary answer
	rec = tlvCall(t, s, "/v1/derive", "application/json", ContentTypeTLV, []byte(`{"identity":"fz","context_hex":"0102","protocol":"tls1.3","kdf":"sha384"}`))
	if k, err := ParseBinKey(rec.Body.Bytes()); err != nil {
		t.Fatal(err)
	} else {
		check("derive json->bin", k, RoleClient)
	}

	// lookup answers as the server; node-a is fz's client, so use a PSK the
	// vault serves: import one with the roles swapped.
	v := s.v
	if _, err := v.Import(context.Background(), vault.ImportRequest{Identity: []byte("sv"), Key: []byte("\x1f\x8e\x22\x9a\x61\x03\xdd\x47\xb9\x5c\x70\xe4\x2b\x86\x0f\xa3\x3c\xf1\x58\x94\x6d\x0b\xc7\x29\xe2\x75\x4a\xbe\x13\x88\xd6\x60"), Hash: importer.SHA256, ClientNode: "node-b", ServerNode: "node-a", PolicyRequest: vault.PolicyRequest{AllowEarlyData: true}}); err != nil {
		t.Fatal(err)
	}
	swire, _ := importer.Identity{External: []byte("sv"), Protocol: importer.TLS13, KDF: importer.HKDFSHA256}.Marshal()
	rec = tlvCall(t, s, "/v1/lookup", ContentTypeTLV, ContentTypeTLV, BinRequest{ImportedIdentity: swire, Protocol: 0x0304, KDF: 1}.Marshal())
	if rec.Code != 200 {
		t.Fatalf("binary lookup: %d %s", rec.Code, rec.Body)
	}
	lk, err := ParseBinKey(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	rec = tlvCall(t, s, "/v1/lookup", "application/json", "", []byte(`{"identity_hex":"`+hex.EncodeToString(swire)+`"}`))
	json.Unmarshal(rec.Body.Bytes(), &got)
	if got.IPSKX != hex.EncodeToString(lk.IPSKX) || lk.Role != RoleServer || !bytes.Equal(lk.ImportedIdentity, swire) {
		t.Fatal("binary lookup differs from JSON lookup")
	}
	if lk.Flags != FlagDHERequired|FlagEarlyData || lk.MaxEarlyData != DefaultMaxEarlyData {
		t.Fatalf("early data policy not carried: flags %b max %d", lk.Flags, lk.MaxEarlyData)
	}
	// a wrong expected context: the same no_key as JSON, code in the header
	rec = tlvCall(t, s, "/v1/lookup", ContentTypeTLV, ContentTypeTLV, BinRequest{ImportedIdentity: swire, HasContext: true, Context: []byte{9}}.Marshal())
	if rec.Code != 404 || rec.Header().Get(HeaderError) != CodeNoKey {
		t.Fatalf("lookup with the wrong context: %d %q", rec.Code, rec.Header().Get(HeaderError))
	}

	// offers: node-a offers fz to node-b
	rec = tlvCall(t, s, "/v1/offers", ContentTypeTLV, ContentTypeTLV, BinRequest{Node: "node-b", HasContext: true, Context: ctxb, Protocol: 0x0304, KDF: 2}.Marshal())
	offers, err := ParseBinOffers(rec.Body.Bytes())
	if rec.Code != 200 || err != nil || len(offers) != 1 {
		t.Fatalf("binary offers: %d %v %d", rec.Code, err, len(offers))
	}
	check("offers", offers[0], RoleClient)
	rec = tlvCall(t, s, "/v1/offers", ContentTypeTLV, ContentTypeTLV, BinRequest{Node: "node-x", Protocol: 0x0304, KDF: 2}.Marshal())
	if offers, err := ParseBinOffers(rec.Body.Bytes()); rec.Code != 200 || err != nil || len(offers) != 0 {
		t.Fatalf("offers to a stranger node: %d %v %d", rec.Code, err, len(offers))
	}
}

// TestBinaryRequestErrors: a malformed binary request gets a specific 400
// and its code in the Pskvault-Error header.
func TestBinaryRequestErrors(t *testing.T) {
	s := NewServerWith(testVault(t), Options{})
	u16 := func(x uint16) []byte { return binary.BigEndian.AppendUint16(nil, x) }
	for _, c := range []struct {
		name, path string
		body       []byte
		code       string
	}{
		{"truncated header", "/v1/lookup", []byte{1, 0, 0}, CodeBadRequest},
		{"length beyond body", "/v1/lookup", []byte{1, 0, 0, 0, 9, 1}, CodeBadRequest},
		{"duplicate", "/v1/lookup", append(AppendField(nil, 1, []byte{1}), AppendField(nil, 1, []byte{1})...), CodeBadRequest},
		{"unknown tag", "/v1/lookup", AppendField(AppendField(nil, 1, []byte{1}), 0x77, nil), CodeBadRequest},
		{"short protocol", "/v1/derive", AppendField(AppendField(nil, TagIdentity, []byte("fz")), TagProtocol, []byte{3}), CodeBadRequest},
		{"no identity", "/v1/lookup", AppendField(nil, TagProtocol, u16(0x0304)), CodeBadRequest},
		{"tls 1.2", "/v1/derive", AppendField(AppendField(AppendField(nil, TagIdentity, []byte("fz")), TagProtocol, u16(0x0303)), TagKDF, u16(1)), CodeLegacyProtocol},
		{"unknown kdf", "/v1/offers", AppendField(AppendField(AppendField(nil, TagNode, []byte("node-b")), TagProtocol, u16(0x0304)), TagKDF, u16(3)), CodeUnknownKDF},
		{"lookup with derive fields", "/v1/lookup", AppendField(AppendField(nil, 1, []byte{1}), TagIdentity, []byte("x")), CodeBadRequest},
		{"bad role", "/v1/derive", AppendField(AppendField(nil, TagIdentity, []byte("fz")), TagRole, []byte{3}), CodeBadRequest},
	} {
		rec := tlvCall(t, s, c.path, ContentTypeTLV, ContentTypeTLV, c.body)
		if rec.Code != 400 || rec.Header().Get(HeaderError) != c.code {
			t.Errorf("%s: %d %q %s", c.name, rec.Code, rec.Header().Get(HeaderError), rec.Body)
		}
	}
	big := AppendField(nil, TagImportedIdentity, make([]byte, MaxBody))
	if rec := tlvCall(t, s, "/v1/lookup", ContentTypeTLV, ContentTypeTLV, big); rec.Code != 413 {
		t.Errorf("oversized binary body: %d", rec.Code)
	}
}

// TestParseBinKeyRules: unknown tags are skipped, known ones are strict.
func TestParseBinKeyRules(t *testing.T) {
	k := BinKey{ImportedIdentity: []byte{0, 1, 'a', 0, 0, 3, 4, 0, 1}, IPSKX: make([]byte, 32), Identity: []byte("a"), Protocol: 0x0304, KDF: 1, Hash: 1, Role: RoleServer, Flags: FlagDHERequired | FlagEarlyData, MaxEarlyData: 1000, Generation: 3, NotAfter: time.Unix(1900000000, 0).UTC()}
	b := k.AppendTo(nil)
	got, err := ParseBinKey(append(AppendField(nil, 0x7f, []byte("future")), b...))
	if err != nil || got.Generation != 3 || !got.NotAfter.Equal(k.NotAfter) || got.MaxEarlyData != 1000 || got.Role != RoleServer {
		t.Fatalf("round trip with an unknown tag: %v %+v", err, got.Generation)
	}
	for name, bad := range map[string][]byte{
		"duplicate ipskx": AppendField(b, TagIPSKX, make([]byte, 32)),
		"short flags":     AppendField(AppendField(nil, TagFlags, []byte{1}), TagIPSKX, make([]byte, 32)),
		"ipskx length":    AppendField(AppendField(AppendField(nil, TagImportedIdentity, []byte{1}), TagKDF, []byte{0, 2}), TagIPSKX, make([]byte, 32)),
		"no ipskx":        AppendField(nil, TagImportedIdentity, []byte{1}),
		"truncated":       b[:len(b)-1],
	} {
		if _, err := ParseBinKey(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzTLV: the request parser and the key and offers parsers never panic,
// and what they accept re-encodes to something they parse to the same.
func FuzzTLV(f *testing.F) {
	f.Add(BinRequest{ImportedIdentity: []byte{0, 1, 'a', 0, 0, 3, 4, 0, 1}, HasContext: true, Protocol: 0x0304, KDF: 1}.Marshal())
	f.Add(BinRequest{Identity: []byte("x"), Node: "n", Role: 1}.Marshal())
	k := BinKey{ImportedIdentity: []byte{1}, IPSKX: make([]byte, 48), KDF: 2, Flags: 3, MaxEarlyData: 5, NotAfter: time.Unix(5, 0)}
	f.Add(k.AppendTo(nil))
	f.Add(AppendOffers(nil, []BinKey{k, k}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := ParseBinRequest(b); err == nil {
			r2, err := ParseBinRequest(r.Marshal())
			if err != nil || !bytes.Equal(r2.Marshal(), r.Marshal()) {
				t.Fatalf("request does not round-trip: %v", err)
			}
		}
		if k, err := ParseBinKey(b); err == nil {
			k2, err := ParseBinKey(k.AppendTo(nil))
			if err != nil || !bytes.Equal(k2.AppendTo(nil), k.AppendTo(nil)) {
				t.Fatalf("key does not round-trip: %v", err)
			}
		}
		if o, err := ParseBinOffers(b); err == nil {
			o2, err := ParseBinOffers(AppendOffers(nil, o))
			if err != nil || len(o2) != len(o) {
				t.Fatalf("offers do not round-trip: %v", err)
			}
		}
	})
}
