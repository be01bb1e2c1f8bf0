package vault

import (
	"bytes"
	"testing"
)

// FuzzParseSecret: the layout of a record's sealed secret never panics on
// any input, and what it accepts encodes back to the same bytes.
func FuzzParseSecret(f *testing.F) {
	f.Add(encodeSecret([]byte("handle"), nil), 0)
	f.Add(encodeSecret([]byte("handle"), [][]byte{[]byte("box-1"), {}}), 2)
	f.Add(encodeSecret(nil, [][]byte{[]byte("box")}), 1)
	f.Add([]byte{0, 0, 0, 9, 1}, 0)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, 1<<30)
	f.Fuzz(func(t *testing.T, pt []byte, n int) {
		if n < 0 || n > 1<<20 {
			return
		}
		h, boxes, err := parseSecret(pt, n)
		if err != nil {
			return
		}
		if len(boxes) != n {
			t.Fatalf("%d boxes, want %d", len(boxes), n)
		}
		if again := encodeSecret(h, boxes); !bytes.Equal(again, pt) {
			t.Fatal("accepted secret does not encode back to the same bytes")
		}
	})
}
