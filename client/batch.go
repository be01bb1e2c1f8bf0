package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"

	"github.com/pskvault/pskvault/api/wire"
)

// BatchEntry is one PSK of a batch import: what Import takes. With
// WrappedKeyBits > 0, Key is a PRK wrapped for the daemon's hardware
// (as for ImportWrapped).
type BatchEntry struct {
	Spec           PSKSpec
	Key            []byte // wiped by ImportBatch once sent
	WrappedKeyBits int
}

// ErrBatchTooLarge: a batch yielded more than wire.MaxBatchEntries
// entries; nothing of it was imported.
var ErrBatchTooLarge = fmt.Errorf("a batch holds at most %d entries", wire.MaxBatchEntries)

// ImportBatch imports the entries next yields (until it returns io.EOF)
// in one request, without the default Timeout (the daemon bounds each
// entry; give ctx a deadline to bound the whole), all or nothing: either every entry is imported or none
// is, and the *Error then lists each problem with its entry's index
// (Entries). Entries are streamed to the daemon as next yields them, each
// key raw in its envelope, never JSON, and wiped once written. An error
// from next other than io.EOF abandons the request: the daemon sees the
// body break off and imports nothing.
func (c *Client) ImportBatch(ctx context.Context, next func() (*BatchEntry, error)) (*wire.BatchResult, error) {
	pr, pw := io.Pipe()
	srcErr := make(chan error, 1) // what ended the body: nil or the source's error
	go func() {
		var buf []byte
		defer func() { clear(buf[:cap(buf)]) }()
		for n := 0; ; n++ {
			e, err := next()
			if err == io.EOF {
				srcErr <- nil
				pw.Close()
				return
			}
			if err == nil && n == wire.MaxBatchEntries {
				clear(e.Key)
				err = ErrBatchTooLarge
			}
			if err != nil {
				srcErr <- err
				pw.CloseWithError(err)
				return
			}
			w := e.Spec.wire()
			w.WrappedKeyBits = e.WrappedKeyBits
			clear(buf[:cap(buf)])
			buf, err = wire.AppendBatchEntry(buf[:0], w, e.Key)
			clear(e.Key)
			if err == nil {
				_, err = pw.Write(buf)
			}
			if err != nil {
				srcErr <- nil // the request ended first
				pw.CloseWithError(err)
				return
			}
		}
	}()
	var out wire.BatchResult
	// No default Timeout: a batch of 10,000 PSKs for a token takes
	// minutes; the daemon bounds each entry by its request timeout, and
	// ctx, when it has a deadline, the whole batch.
	err := c.getJSONReader(context.WithValue(ctx, noTimeout{}, true), http.MethodPost, "/v1/psks/import-batch", wire.ContentTypeBatch, pr, &out)
	pr.CloseWithError(errors.New("request over")) // ends the writer if the request failed early
	if serr := <-srcErr; serr != nil {
		// The body broke off: the daemon imported nothing of the batch.
		return nil, fmt.Errorf("batch entries: %w (the request was abandoned; nothing of this batch was imported)", serr)
	}
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// getJSONReader is getJSON with a streamed body.
func (c *Client) getJSONReader(ctx context.Context, method, path, ctype string, body io.Reader, out any) error {
	resp, err := c.doReader(ctx, method, path, ctype, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode daemon answer: %w", err)
	}
	return nil
}

// ListPage returns one page of at most limit records (0: the daemon's
// largest, wire.MaxPageLimit) after cursor ("" for the first page) and the
// cursor of the next page ("" after the last).
func (c *Client) ListPage(ctx context.Context, cursor string, limit int) ([]wire.PSK, string, error) {
	body, _ := json.Marshal(wire.PageRequest{Limit: limit, Cursor: cursor})
	var l wire.PSKList
	if err := c.getJSON(ctx, http.MethodPost, "/v1/psks/list", nil, "application/json", body, &l); err != nil {
		return nil, "", err
	}
	return l.PSKs, l.NextCursor, nil
}

// PSKs iterates over every record, a page of pageSize (0: the daemon's
// largest) at a time, in identity-byte order. A record that exists
// throughout the walk is yielded exactly once. The walk stops at the
// first error, which it yields.
func (c *Client) PSKs(ctx context.Context, pageSize int) iter.Seq2[wire.PSK, error] {
	return func(yield func(wire.PSK, error) bool) {
		cursor := ""
		for {
			page, next, err := c.ListPage(ctx, cursor, pageSize)
			if err != nil {
				yield(wire.PSK{}, err)
				return
			}
			for _, p := range page {
				if !yield(p, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			cursor = next
		}
	}
}

// CheckPage audits one page of at most limit records after cursor; the
// report's counts are the page's, its NextCursor the next page's ("" after
// the last). The reconciliation at start comes with the first page.
func (c *Client) CheckPage(ctx context.Context, cursor string, limit int) (*wire.Report, error) {
	body, _ := json.Marshal(wire.PageRequest{Limit: limit, Cursor: cursor})
	var r wire.Report
	return &r, c.getJSON(ctx, http.MethodPost, "/v1/check", nil, "application/json", body, &r)
}
