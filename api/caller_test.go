package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http/httptest"
	"path/filepath"
	"testing"

	_ "github.com/pskvault/pskvault/backends/soft"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// TestUnknownCallerFailsClosed: a request whose peer credentials are
// unknown is nobody: it derives nothing and cannot administer, even though
// the vault trusts in-process (nil) callers.
func TestUnknownCallerFailsClosed(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	if err := vault.Init(ctx, dir, vault.Config{NodeID: "node-a", Backend: "soft"}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	key := make([]byte, 32)
	rand.Read(key)
	if _, err := v.Import(ctx, vault.ImportRequest{Identity: []byte("k"), Key: key, Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"}); err != nil {
		t.Fatal(err)
	}
	s := NewServerWith(v, Options{})
	for _, sock := range []Socket{SocketAdmin, SocketData} {
		for _, c := range []struct{ method, path, body string }{
			{"POST", "/v1/derive", `{"identity":"k","protocol":"tls1.3","kdf":"sha256"}`},
			{"GET", "/v1/psks", ""},
			{"DELETE", "/v1/psks/6b", ""},
		} {
			req := httptest.NewRequest(c.method, c.path, bytes.NewReader([]byte(c.body)))
			req = req.WithContext(context.WithValue(req.Context(), keySocket, sock))
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code < 400 {
				t.Errorf("%s socket, %s %s without peer credentials: status %d", sock, c.method, c.path, rec.Code)
			}
		}
	}
	if _, err := v.Get([]byte("k")); err != nil {
		t.Fatal("a request without peer credentials deleted a PSK")
	}
}
