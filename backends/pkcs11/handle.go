package pkcs11

import (
	"errors"
	"fmt"

	"github.com/pskvault/pskvault/importer"
)

// A handle is what the vault records for a key on a token:
//
//	byte 0     handle format version (1)
//	byte 1     the EPSK hash (importer.Hash)
//	bytes 2..  the object's CKA_ID (idLen random bytes)
//
// It names the object; it holds nothing secret.
const (
	handleV1 = 1
	idLen    = 16
)

// ErrBadHandle reports a handle this backend did not produce.
var ErrBadHandle = errors.New("malformed PKCS#11 key handle")

func encodeHandle(h importer.Hash, id []byte) []byte {
	out := make([]byte, 0, 2+len(id))
	out = append(out, handleV1, byte(h))
	return append(out, id...)
}

func decodeHandle(b []byte) (importer.Hash, []byte, error) {
	if len(b) < 2 {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrBadHandle, len(b))
	}
	if b[0] != handleV1 {
		return 0, nil, fmt.Errorf("%w: unknown version %d", ErrBadHandle, b[0])
	}
	h := importer.Hash(b[1])
	if !h.Valid() {
		return 0, nil, fmt.Errorf("%w: unknown hash %d", ErrBadHandle, b[1])
	}
	if len(b) != 2+idLen {
		return 0, nil, fmt.Errorf("%w: CKA_ID is %d bytes, want %d", ErrBadHandle, len(b)-2, idLen)
	}
	return h, append([]byte{}, b[2:]...), nil
}
