package wire

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
)

// Batch import (POST /v1/psks/import-batch, admin socket; docs/API.md).

// ContentTypeBatch marks a batch import body: entries one after another,
// each a 4-byte big-endian length L and then L bytes holding one envelope
// (ContentTypeEnvelope: the PSKSpec as JSON and the raw key), exactly the
// body a single import takes. The key is never JSON. The body is read
// entry by entry as it arrives; it ends after the last entry.
const ContentTypeBatch = "application/vnd.pskvault.envelope-batch"

// MaxBatchEntries caps the entries of one batch request (the records are
// held until the batch's one transaction commits); a provisioning run of
// more PSKs sends several batches, each all or nothing.
const MaxBatchEntries = 10_000

// MaxBatchBody caps a batch request's body. One entry is at most MaxBody
// bytes.
const MaxBatchBody = 64 << 20

// AppendBatchEntry appends one batch entry (length, envelope of meta and
// key) to dst. The caller wipes the result, which holds the key.
func AppendBatchEntry(dst []byte, meta any, key []byte) ([]byte, error) {
	m, err := json.Marshal(meta)
	if err != nil {
		return dst, err
	}
	n := 4 + len(m) + len(key)
	if n > MaxBody {
		return dst, errors.New("batch entry over MaxBody bytes")
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(m)))
	dst = append(dst, m...)
	return append(dst, key...), nil
}

// BatchImported is one PSK a batch imported.
type BatchImported struct {
	IdentityHex string `json:"identity_hex"`
	KCV         string `json:"kcv,omitempty"` // key check value (docs/BUNDLE.md)
}

// BatchResult answers a batch import that succeeded: every entry was
// imported, in entry order.
type BatchResult struct {
	Imported int             `json:"imported"`
	PSKs     []BatchImported `json:"psks"`
}

// BatchEntryError is one entry's problem in a refused batch: its 0-based
// index and the code and message a single import of it would have had.
type BatchEntryError struct {
	Index   int    `json:"index"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// CodeBatchRefused: a batch import refused as a whole, nothing imported;
// the answer's entries say which entries failed and why.
const CodeBatchRefused = "batch_refused"

// Paged reads (POST /v1/psks/list, POST /v1/check; docs/API.md).

// PageRequest asks for one page: at most Limit records (0: MaxPageLimit;
// more is capped to it) after Cursor ("" for the first page; otherwise a
// next_cursor the daemon returned).
type PageRequest struct {
	Limit  int    `json:"limit,omitempty"`
	Cursor string `json:"cursor,omitempty"`
}

// MaxPageLimit caps a page of list or check.
const MaxPageLimit = 1000

// CodeBadCursor: a cursor the daemon did not make (400).
const CodeBadCursor = "bad_cursor"

// cursorVersion starts every cursor.
const cursorVersion = 1

// EncodeCursor makes the opaque cursor for "after this identity" ("" for
// nil: no next page).
func EncodeCursor(after []byte) string {
	if after == nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(append([]byte{cursorVersion}, after...))
}

// ErrBadCursor is a cursor that does not decode.
var ErrBadCursor = errors.New("invalid cursor: pass a next_cursor exactly as the daemon returned it")

// DecodeCursor returns the identity a cursor resumes after (nil for "").
func DecodeCursor(c string) ([]byte, error) {
	if c == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 2 || b[0] != cursorVersion || len(b)-1 > 65535 {
		return nil, ErrBadCursor
	}
	return b[1:], nil
}
