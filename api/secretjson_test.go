package api

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"
)

// writeSecretJSON puts each key's hex where its placeholder is, in any
// order, and is not fooled by a string value that spells a placeholder.
func TestWriteSecretJSON(t *testing.T) {
	k0, k1 := bytes.Repeat([]byte{0xa1}, 32), bytes.Repeat([]byte{0xb2}, 48)
	list := OfferList{Offers: []Offer{
		{IdentityHex: `"ipskx":"pskvault-secret-0"`, IPSKX: secretRef(1)},
		{IdentityHex: "x", IPSKX: secretRef(0)},
	}}
	rec := httptest.NewRecorder()
	writeSecretJSON(rec, 200, list, [][]byte{k0, k1})
	var got OfferList
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Offers) != 2 || got.Offers[0].IPSKX != hexOf(k1) || got.Offers[1].IPSKX != hexOf(k0) || got.Offers[0].IdentityHex != list.Offers[0].IdentityHex {
		t.Fatal("keys not spliced in place (mismatch)")
	}
	rec = httptest.NewRecorder()
	writeSecretJSON(rec, 200, list, [][]byte{k0}) // a placeholder without its key
	if rec.Code != 500 || bytes.Contains(rec.Body.Bytes(), []byte(hexOf(k0))) {
		t.Fatalf("missing key: %d", rec.Code)
	}
}
