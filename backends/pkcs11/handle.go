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

// tagLen is how much of the vault's ID starts the CKA_ID of every key the
// backend creates for that vault:
//
//	CKA_ID = vault tag (8 bytes) || hash (1 byte) || random (7 bytes)
//
// so that Keys can list exactly this vault's keys, with the handle the
// vault recorded, on a token other vaults or programs share. Without a
// vault ID (Open outside a vault) the CKA_ID is 16 random bytes, as for
// keys made before tags existed.
const tagLen = 8

// handleOfID rebuilds the handle of a key from its CKA_ID when the ID
// carries tag; ok is false for any other object.
func handleOfID(tag, id []byte) ([]byte, bool) {
	if len(tag) != tagLen || len(id) != idLen || string(id[:tagLen]) != string(tag) {
		return nil, false
	}
	h := importer.Hash(id[tagLen])
	if !h.Valid() {
		return nil, false
	}
	return encodeHandle(h, id), true
}
