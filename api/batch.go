package api

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/pskvault/pskvault/api/wire"
	"github.com/pskvault/pskvault/vault"
)

// Batch import and paged list and check (issue 12; docs/API.md).

// keyExtendRead is the request context's func that gives the body another
// ReadTimeout to arrive (set by the socket server; a batch body is read
// entry by entry while the entries are imported).
type extendReadKey struct{}

var keyExtendRead = extendReadKey{}

// errStream marks a batch body that cannot be read any further (a broken
// frame, a body cut off): the batch ends there.
var errStream = errors.New("batch body unreadable")

// batchReader reads the entries of a batch body one at a time into one
// buffer, wiped before each read and at the end.
type batchReader struct {
	r   *bufio.Reader
	buf []byte
	n   int // entries read
}

func newBatchReader(r io.Reader) *batchReader {
	return &batchReader{r: bufio.NewReaderSize(r, 32<<10)}
}

func (b *batchReader) wipe() { clear(b.buf[:cap(b.buf)]) }

// next returns the next entry's spec and key (a sub-slice of the reader's
// buffer, valid until the next call). io.EOF: the body ended cleanly
// between entries. An error wrapping errStream: the body cannot be read on
// (the batch ends); an error wrapping errBadRequest only: this entry is
// malformed but the next one can be read.
func (b *batchReader) next(spec *wire.PSKSpec) ([]byte, error) {
	b.wipe()
	var hdr [4]byte
	n, err := io.ReadFull(b.r, hdr[:])
	switch {
	case n == 0 && err == io.EOF:
		return nil, io.EOF
	case err != nil:
		return nil, b.broken(err)
	}
	l := binary.BigEndian.Uint32(hdr[:])
	if l < 4 || l > MaxBody {
		return nil, fmt.Errorf("%w: %w: entry %d: length %d, want 4 to %d bytes", errBadRequest, errStream, b.n, l, MaxBody)
	}
	if cap(b.buf) < int(l) {
		b.buf = make([]byte, l, max(int(l), 1024))
	}
	b.buf = b.buf[:l]
	if _, err := io.ReadFull(b.r, b.buf); err != nil {
		return nil, b.broken(err)
	}
	b.n++
	key, err := ParseEnvelope(b.buf, spec)
	if err != nil {
		return nil, err
	}
	return key, nil
}

func (b *batchReader) broken(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Errorf("%w: %w", errStream, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %w: the body ends inside entry %d", errBadRequest, errStream, b.n)
	}
	return fmt.Errorf("%w: %w: reading entry %d: %v", errBadRequest, errStream, b.n, err)
}

// importBatch imports the entries of a batch body, all or nothing.
func (s *Server) importBatch(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != ContentTypeBatch {
		s.fail(w, badRequest("Content-Type must be %s (entries of a length and an envelope, docs/API.md)", ContentTypeBatch))
		return
	}
	extend, _ := r.Context().Value(keyExtendRead).(func())
	br := newBatchReader(r.Body)
	defer br.wipe()
	next := func() (*vault.ImportRequest, error) {
		if extend != nil {
			extend() // each entry gets ReadTimeout to arrive
		}
		var spec PSKSpec
		key, err := br.next(&spec)
		if err != nil {
			if err == io.EOF || errors.Is(err, errStream) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", vault.ErrInvalid, err)
		}
		req, err := specRequest(spec, false)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", vault.ErrInvalid, err)
		}
		req.Key = key
		return &req, nil
	}
	ps, err := s.v.ImportBatch(r.Context(), s.opts.RequestTimeout, next)
	ae := auditOf(r)
	var be *vault.BatchError
	if errors.As(err, &be) {
		s.failBatch(w, be)
		ae.Count = be.Read
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	out := BatchResult{Imported: len(ps), PSKs: make([]wire.BatchImported, len(ps))}
	for i, p := range ps {
		out.PSKs[i] = wire.BatchImported{IdentityHex: p.IdentityHex(), KCV: p.KCV}
	}
	ae.Count = len(ps)
	// One audit line per PSK imported, paired with the request's lines.
	for _, p := range ps {
		e := *ae
		e.Op, e.Identity, e.Result, e.Status, e.Count = "import-batch-entry", p.IdentityHex(), "ok", http.StatusCreated, 0
		e.Time = p.Created
		s.auditResult(s.audit.Write(&e))
	}
	writeJSON(w, http.StatusCreated, out)
}

// failBatch answers a refused batch: the status and code of its first
// problem's error as a single import would get them, code batch_refused
// on top, and every problem with its index.
func (s *Server) failBatch(w http.ResponseWriter, be *vault.BatchError) {
	out := Error{Code: wire.CodeBatchRefused, Message: be.Error(), Read: be.Read, Truncated: be.Truncated, Entries: make([]wire.BatchEntryError, 0, len(be.Entries))}
	status := http.StatusBadRequest
	for i, e := range be.Entries {
		rw := &responseWriter{header: http.Header{}}
		s.fail(rw, e.Err)
		var one Error
		json.Unmarshal(rw.body.Bytes(), &one)
		if i == 0 {
			status = rw.code
		}
		out.Entries = append(out.Entries, wire.BatchEntryError{Index: e.Index, Code: one.Code, Message: one.Message})
	}
	if be.Cleanup != nil {
		s.log.Error("batch import refused, and destroying the keys it had made failed", "err", be.Cleanup)
	}
	if rec, ok := w.(*statusRecorder); ok {
		rec.errCode = wire.CodeBatchRefused
	}
	w.Header().Set(HeaderError, wire.CodeBatchRefused)
	writeJSON(w, status, out)
}

// pageOf reads a page request: none for GET (the first page, the largest
// limit), a PageRequest body for POST.
func pageOf(r *http.Request) (after []byte, limit int, err error) {
	var req wire.PageRequest
	if r.Method == http.MethodPost {
		if err := decodeJSON(r, &req); err != nil {
			return nil, 0, err
		}
	}
	if req.Limit < 0 {
		return nil, 0, badRequest("limit: want a positive number of records (at most %d)", wire.MaxPageLimit)
	}
	if req.Limit == 0 || req.Limit > wire.MaxPageLimit {
		req.Limit = wire.MaxPageLimit
	}
	after, err = wire.DecodeCursor(req.Cursor)
	return after, req.Limit, err
}

// failPage answers a bad page request.
func (s *Server) failPage(w http.ResponseWriter, err error) {
	if errors.Is(err, wire.ErrBadCursor) {
		writeError(w, http.StatusBadRequest, wire.CodeBadCursor, err.Error())
		return
	}
	s.fail(w, err)
}

// list answers one page of the records.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	after, limit, err := pageOf(r)
	if err != nil {
		s.failPage(w, err)
		return
	}
	ps, next, err := s.v.ListPage(after, limit)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := PSKList{PSKs: make([]PSK, 0, len(ps)), NextCursor: wire.EncodeCursor(next)}
	for _, p := range ps {
		out.PSKs = append(out.PSKs, FromRecord(p))
	}
	writeJSON(w, http.StatusOK, out)
}

// check answers one page of the RFC 9257 audit.
func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	after, limit, err := pageOf(r)
	if err != nil {
		s.failPage(w, err)
		return
	}
	rep, next, err := s.v.CheckPage(after, limit)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		*vault.Report
		NextCursor string `json:"next_cursor,omitempty"`
	}{rep, wire.EncodeCursor(next)})
}

// patternBatch is the batch import's route.
const patternBatch = "POST /v1/psks/import-batch"

// batchRoutes adds the batch import and the paged reads.
func (s *Server) batchRoutes() {
	s.mux.HandleFunc(patternBatch, s.importBatch)
	s.mux.HandleFunc("POST /v1/psks/list", s.list)
	s.mux.HandleFunc("POST /v1/check", s.check)
}
