package pkcs11

import (
	"bytes"
	"crypto/aes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhexT(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unwrapPad is RFC 5649 unwrapping, only to check WrapPRK in tests.
func unwrapPad(kek, c []byte) ([]byte, bool) {
	block, _ := aes.NewCipher(kek)
	n := len(c)/8 - 1
	var a [8]byte
	r := make([]byte, 8*n)
	var b [16]byte
	if n == 1 {
		block.Decrypt(b[:], c)
		copy(a[:], b[:8])
		copy(r, b[8:])
	} else {
		copy(a[:], c[:8])
		copy(r, c[8:])
		for j := 5; j >= 0; j-- {
			for i := n; i >= 1; i-- {
				binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(a[:])^uint64(n*j+i))
				copy(b[8:], r[8*(i-1):8*i])
				block.Decrypt(b[:], b[:])
				copy(a[:], b[:8])
				copy(r[8*(i-1):8*i], b[8:])
			}
		}
	}
	if binary.BigEndian.Uint32(a[:4]) != rfc5649IV {
		return nil, false
	}
	mli := int(binary.BigEndian.Uint32(a[4:]))
	if mli <= 8*(n-1) || mli > 8*n {
		return nil, false
	}
	for _, x := range r[mli:] {
		if x != 0 {
			return nil, false
		}
	}
	return r[:mli], true
}

// RFC 5649 section 6 test vectors.
func TestWrapPRKVectors(t *testing.T) {
	kek := unhexT(t, "5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8")
	for _, c := range []struct{ key, wrapped string }{
		{"c37b7e6492584340 bed1220780894115 5068f738", "138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf541 9200f2ccb50bb24f"},
	} {
		got, err := WrapPRK(kek, unhexT(t, c.key))
		if err != nil {
			t.Fatal(err)
		}
		if want := unhexT(t, c.wrapped); !bytes.Equal(got, want) {
			t.Fatalf("WrapPRK = %x, want %x", got, want)
		}
		back, ok := unwrapPad(kek, got)
		if !ok || !bytes.Equal(back, unhexT(t, c.key)) {
			t.Fatal("unwrap of the vector failed")
		}
	}
	if _, err := WrapPRK(make([]byte, 15), make([]byte, 32)); !errors.Is(err, ErrWrap) {
		t.Fatalf("bad KEK length: %v", err)
	}
	if _, err := WrapPRK(make([]byte, 16), nil); !errors.Is(err, ErrWrap) {
		t.Fatalf("empty key: %v", err)
	}
}

func FuzzWrapPRK(f *testing.F) {
	f.Add(make([]byte, 32), []byte("x"))
	f.Fuzz(func(t *testing.T, kek, key []byte) {
		c, err := WrapPRK(kek, key)
		if err != nil {
			return
		}
		back, ok := unwrapPad(kek, c)
		if !ok || !bytes.Equal(back, key) {
			t.Fatal("round trip failed")
		}
	})
}
