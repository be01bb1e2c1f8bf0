package pkcs11

import (
	"crypto/aes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pskvault/pskvault/importer"
)

// ErrWrap reports bad input to WrapPRK / WrapEPSK.
var ErrWrap = errors.New("AES key wrap")

// rfc5649IV is the alternative initial value's constant half (RFC 5649 section 3).
const rfc5649IV = 0xA65959A6

// WrapPRK wraps prk under kek with AES Key Wrap with Padding (RFC 5649), the
// format CKM_AES_KEY_WRAP_PAD unwraps. The result is what ImportWrapped
// takes when kek is the value of the wrapping key on the token. kek is a
// 16-, 24- or 32-byte AES key. Neither input is retained or modified.
func WrapPRK(kek, prk []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("%w: wrapping key must be 16, 24 or 32 bytes, got %d", ErrWrap, len(kek))
	}
	if len(prk) == 0 || uint64(len(prk)) > 0xffffffff {
		return nil, fmt.Errorf("%w: key to wrap must be 1..2^32-1 bytes", ErrWrap)
	}
	n := (len(prk) + 7) / 8 // number of 64-bit blocks after padding
	var a [8]byte
	binary.BigEndian.PutUint32(a[:4], rfc5649IV)
	binary.BigEndian.PutUint32(a[4:], uint32(len(prk)))

	out := make([]byte, 8+8*n)
	copy(out[8:], prk) // zero padding is already there
	var b [16]byte
	defer clear(b[:])
	if n == 1 {
		copy(b[:8], a[:])
		copy(b[8:], out[8:16])
		block.Encrypt(out, b[:])
		return out, nil
	}
	// RFC 3394 wrapping process W with the RFC 5649 AIV.
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(b[:8], a[:])
			copy(b[8:], out[8*i:8*i+8])
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(b[:8])^t)
			copy(out[8*i:8*i+8], b[8:])
		}
	}
	copy(out[:8], a[:])
	return out, nil
}

// WrapEPSK computes the PRK of epsk for h (HKDF-Extract, as the importer
// does at import) and wraps it under kek with WrapPRK. The intermediate PRK
// is wiped. This is the provisioning-side half of a wrapped import: run it
// where the EPSK already lives, ship only the blob.
func WrapEPSK(kek []byte, h importer.Hash, epsk []byte) ([]byte, error) {
	prk, err := importer.Extract(h, epsk)
	if err != nil {
		return nil, err
	}
	defer clear(prk)
	return WrapPRK(kek, prk)
}
