package bundle

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

func sample(t testing.TB) (*Bundle, []byte) {
	epsk := make([]byte, 32)
	rand.Read(epsk)
	prk, err := importer.Extract(importer.SHA256, epsk)
	if err != nil {
		t.Fatal(err)
	}
	b := &Bundle{ForNode: "node-b", Identity: []byte("link"), Client: "node-a", Server: "node-b", NodeContext: true,
		Hash: importer.SHA256, Targets: []string{"tls1.3/sha256"}, DHERequired: true,
		NotBefore: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC), Generation: 2, Rotates: []byte("link0"), Overlap: 24 * time.Hour,
		KeyBits: 256, KCV: vault.KCVFromPRK(importer.SHA256, prk), KeyKind: KeyClear, Key: epsk}
	mk := vault.BundleMACKeyFromPRK(importer.SHA256, prk)
	b.Seal(mk)
	return b, mk
}

// TestRoundTripAndEveryByte: a bundle parses back to itself, and changing
// any single byte of it makes it either unparsable or fail its MAC.
func TestRoundTripAndEveryByte(t *testing.T) {
	b, mk := sample(t)
	raw := b.Marshal()
	got, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(mk); err != nil || !bytes.Equal(got.Marshal(), raw) {
		t.Fatalf("round trip: %v", err)
	}
	for i := range raw {
		for _, x := range []byte{0x01, 0x20} {
			ed := bytes.Clone(raw)
			ed[i] ^= x
			p, err := Parse(ed)
			if err != nil {
				continue
			}
			// A changed key is a different MAC key: verify under the key
			// the bundle now carries, as the importer does.
			prk, _ := importer.Extract(p.Hash, p.Key)
			if p.KeyKind == KeyClear && p.Verify(vault.BundleMACKeyFromPRK(p.Hash, prk)) == nil {
				t.Fatalf("byte %d changed (^%#x) and the bundle still verifies", i, x)
			}
		}
	}
}

func TestParseRefuses(t *testing.T) {
	b, _ := sample(t)
	raw := b.Marshal()
	for name, in := range map[string][]byte{
		"bare hex":             []byte("00112233445566778899aabbccddeeff\n"),
		"version 2":            append([]byte("pskvault-bundle 2\n"), raw[len(Magic)+1:]...),
		"trailing":             append(bytes.Clone(raw), "x: y\n"...),
		"truncated":            raw[:len(raw)-3],
		"no for-node":          bytes.Replace(raw, []byte("for-node: node-b"), []byte("for-node: "), 1),
		"overlap, no rotation": bytes.Replace(bytes.Replace(raw, []byte("rotates-hex: 6c696e6b30"), []byte("rotates-hex: -"), 1), []byte("generation: 2"), []byte("generation: 1"), 1),
	} {
		if _, err := Parse(in); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: got %v, want ErrFormat", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	b, _ := sample(f)
	f.Add(b.Marshal())
	f.Add([]byte(Magic + "\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := Parse(in)
		if err != nil {
			return
		}
		// What parses marshals back to the same bytes: one encoding only.
		if !bytes.Equal(p.Marshal(), in) {
			t.Fatalf("accepted input is not in canonical form")
		}
	})
}
