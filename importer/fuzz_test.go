package importer_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pskvault/pskvault/importer"
)

// FuzzParseIdentity checks that ParseIdentity never panics, that every error
// is one of the package's sentinels, and that whatever parses re-marshals to
// exactly the input bytes (the decoding is strict and canonical).
func FuzzParseIdentity(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(v.wire)
		f.Add(v.wire[:len(v.wire)-1])
		f.Add(append(append([]byte{}, v.wire...), 0))
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 3, 4, 0, 1})                  // empty external identity
	f.Add([]byte{0, 1, 'a', 0, 0, 3, 3, 0, 1})             // TLS 1.2
	f.Add([]byte{0, 1, 'a', 0, 0, 0xfe, 0xfc, 0, 3})       // unknown KDF
	f.Add([]byte{0xff, 0xff, 'a', 0, 0, 3, 4, 0, 1})       // length overrun
	f.Add([]byte{0, 1, 'a', 0xff, 0xff, 0, 0, 3, 4, 0, 1}) // context overrun

	f.Fuzz(func(t *testing.T, in []byte) {
		id, err := importer.ParseIdentity(in)
		if err != nil {
			if !errors.Is(err, importer.ErrMalformedIdentity) && !errors.Is(err, importer.ErrUnknownProtocol) &&
				!errors.Is(err, importer.ErrLegacyProtocol) && !errors.Is(err, importer.ErrUnknownKDF) {
				t.Fatalf("error matches no sentinel: %v", err)
			}
			return
		}
		out, err := id.Marshal()
		if err != nil {
			t.Fatalf("parsed identity does not marshal: %v", err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("re-marshal differs from input (%d vs %d bytes)", len(out), len(in))
		}
		for _, h := range []importer.Hash{importer.SHA256, importer.SHA384} {
			plan, err := importer.NewPlan(h, id)
			if err != nil {
				t.Fatalf("NewPlan(%v) rejects a parsed identity: %v", h, err)
			}
			if !bytes.Equal(plan.ImportedIdentity(), in) {
				t.Fatalf("Plan.ImportedIdentity differs from input")
			}
		}
	})
}
