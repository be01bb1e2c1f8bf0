package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestImportBatchNoDefaultTimeout: a batch takes as long as its daemon
// takes (minutes for 10,000 token keys); the default Timeout, which other
// requests still get, does not cut it off.
func TestImportBatchNoDefaultTimeout(t *testing.T) {
	defer func(d time.Duration) { defaultTimeout = d }(defaultTimeout)
	defaultTimeout = 300 * time.Millisecond
	sock, _, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(time.Second)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"imported":1,"psks":[{"identity_hex":"61","kcv":"000000"}]}`)
	})
	c := New(sock)
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Status(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("status against a slow daemon: %v, want the default timeout", err)
	}
	n := 0
	res, err := c.ImportBatch(ctx, func() (*BatchEntry, error) {
		if n == 1 {
			return nil, io.EOF
		}
		n++
		return &BatchEntry{Spec: PSKSpec{Identity: []byte("a"), ClientNode: "x", ServerNode: "y"}, Key: make([]byte, 32)}, nil
	})
	if err != nil || res.Imported != 1 {
		t.Fatalf("slow batch: %v", err)
	}
	// A deadline of the caller's still bounds it.
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	n = 0
	if _, err := c.ImportBatch(ctx, func() (*BatchEntry, error) {
		if n == 1 {
			return nil, io.EOF
		}
		n++
		return &BatchEntry{Spec: PSKSpec{Identity: []byte("a")}, Key: make([]byte, 32)}, nil
	}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("batch past the caller's deadline: %v", err)
	}
}
