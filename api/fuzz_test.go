package api

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"

	_ "github.com/pskvault/pskvault/backends/soft"
)

// fuzzKey is the fuzz vault's EPSK; no answer may ever contain it.
var fuzzKey = []byte("\x8f\x1e\xa3\x5c\x02\xd7\x9b\x44\x6e\xf0\x13\xc8\x7a\x21\xbe\x95\x3d\x60\xe9\x0c\x57\xa4\x18\xfb\x82\x39\xd6\x4b\x75\xae\x03\xc1")

// FuzzRequests sends arbitrary bodies to every endpoint of a live server,
// as root on the admin socket and as a stranger on the data socket: no
// panic, no 5xx, and never the EPSK in an answer.
func FuzzRequests(f *testing.F) {
	v := testVault(f)
	s := NewServerWith(v, Options{})
	wire, _ := importer.Identity{External: []byte("fz"), Context: []byte{1}, Protocol: importer.TLS13, KDF: importer.HKDFSHA256}.Marshal()
	routes := []string{"POST /v1/derive", "POST /v1/lookup", "POST /v1/offers", "POST /v1/psks/import", "POST /v1/psks/show", "POST /v1/psks/delete"}
	seeds := []string{
		`{"identity":"fz","protocol":"tls1.3","kdf":"sha256"}`,
		`{"identity_hex":"667a","context_hex":"01","protocol":"dtls1.3","kdf":"sha384"}`,
		`{"identity_hex":"` + hex.EncodeToString(wire) + `","context_hex":"01"}`,
		`{"server":"node-b","protocol":"tls1.3","kdf":"sha256"}`,
		`{"identity":"fz","protocol":"tls1.2","kdf":"sha256"}`,
		`{"identity":"fz","identity_hex":"zz"}`,
		`{"identity":"fz"} {}`,
		`{"identity":"fz","extra":1}`,
		`[`, ``, `null`, `{"identity_hex":"0002"}`,
		"\x00\x00\x00\x34{\"identity\":\"x\",\"client\":\"node-a\",\"server\":\"node-b\"}0123456789abcdef0123456789abcdef",
		"\xff\xff\xff\xff{}",
	}
	seeds = append(seeds,
		string(BinRequest{ImportedIdentity: wire, HasContext: true, Context: []byte{1}, Protocol: 0x0304, KDF: 1}.Marshal()),
		string(BinRequest{Identity: []byte("fz"), Protocol: 0x0304, KDF: 1}.Marshal()),
		string(BinRequest{Node: "node-b", Protocol: 0x0304, KDF: 2}.Marshal()))
	for i := range routes {
		for _, sd := range seeds {
			f.Add(uint8(i), false, false, []byte(sd))
			f.Add(uint8(i), true, false, []byte(sd))
			f.Add(uint8(i), true, true, []byte(sd))
		}
	}
	root := &vault.Caller{UID: 0}
	stranger := &vault.Caller{UID: 4242, GID: 4242, PID: 1}
	f.Fuzz(func(t *testing.T, route uint8, data, bin bool, body []byte) {
		method, path, _ := cut(routes[int(route)%len(routes)])
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if strings.HasSuffix(path, "/import") {
			req.Header.Set("Content-Type", ContentTypeEnvelope)
		}
		if bin { // the binary form (tlv.go), request and answer
			req.Header.Set("Content-Type", ContentTypeTLV)
			req.Header.Set("Accept", ContentTypeTLV)
		}
		c, sock := root, SocketAdmin
		if data {
			c, sock = stranger, SocketData
		}
		req = req.WithContext(context.WithValue(context.WithValue(req.Context(), keyCaller, c), keySocket, sock))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: status %d: %s", method, path, rec.Code, rec.Body.String())
		}
		if data && rec.Code == http.StatusOK && method == http.MethodPost && path != "/v1/offers" {
			t.Fatalf("a stranger got a key from %s", path)
		}
		out := rec.Body.Bytes()
		if bytes.Contains(out, fuzzKey) || bytes.Contains(out, []byte(hex.EncodeToString(fuzzKey))) {
			t.Fatal("answer holds the EPSK")
		}
	})
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == ' ' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// FuzzEnvelope: ParseEnvelope never panics, and what it accepts
// round-trips through MarshalEnvelope to the same metadata and key.
func FuzzEnvelope(f *testing.F) {
	good, _ := MarshalEnvelope(PSKSpec{Identity: "x", Client: "a", Server: "b", Targets: []string{"tls1.3/sha256"}}, []byte("0123456789abcdef"))
	f.Add(good)
	f.Add([]byte("\x00\x00\x00\x02{}"))
	f.Add([]byte("\xff\xff\xff\xff{}"))
	f.Add([]byte("\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m PSKSpec
		key, err := ParseEnvelope(b, &m)
		if err != nil {
			return
		}
		again, err := MarshalEnvelope(m, key)
		if err != nil {
			t.Fatal(err)
		}
		var m2 PSKSpec
		key2, err := ParseEnvelope(again, &m2)
		if err != nil || !bytes.Equal(key, key2) || fmt.Sprint(m) != fmt.Sprint(m2) {
			t.Fatalf("round trip changed the envelope: %v", err)
		}
	})
}
