package tpm

import (
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/pskvault/pskvault/importer"
)

// Handles and wrapped blobs come from the vault's database and from files
// users hand in: decoding must never panic, and whatever decodes must encode
// back to the same bytes.
func FuzzParseHandle(f *testing.F) {
	k := &keyBlob{origin: originCreated, hash: importer.SHA256, parentName: []byte{0, 0xb, 1, 2}, pcrMask: 1 << 7,
		pcrValues: [][]byte{make([]byte, 32)},
		pubBytes:  tpm2.Marshal(tpm2.New2B(hmacTemplate(importer.SHA256, true, nil))),
		privBytes: tpm2.Marshal(tpm2.TPM2BPrivate{Buffer: make([]byte, 16)})}
	if _, err := parseHandle(k.marshal(), importer.SHA256); err != nil {
		f.Fatalf("seed handle does not parse: %v", err)
	}
	f.Add(k.marshal())
	k.authSalt = make([]byte, authSaltLen)
	if _, err := parseHandle(k.marshal(), importer.SHA256); err != nil {
		f.Fatalf("seed version 2 handle does not parse: %v", err)
	}
	f.Add(k.marshal())
	f.Add([]byte("PSKVTPM\x01"))
	f.Add([]byte("PSKVTPM\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
			k, err := parseHandle(b, h)
			if err != nil {
				continue
			}
			if string(k.marshal()) != string(b) {
				t.Fatal("handle does not re-encode to itself")
			}
		}
	})
}

func FuzzParseWrapped(f *testing.F) {
	f.Add([]byte("PSKVTPW\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseWrapped(b)
	})
}
