package api

import (
	"bytes"
	"context"
	"net/http/httptest"
	"testing"

	_ "github.com/pskvault/pskvault/backends/soft"
)

// TestUnknownCallerFailsClosed: a request whose peer credentials are
// unknown is nobody: it derives nothing and cannot administer, even though
// the vault trusts in-process (nil) callers.
func TestUnknownCallerFailsClosed(t *testing.T) {
	v := testVault(t)
	s := NewServerWith(v, Options{})
	for _, sock := range []Socket{SocketAdmin, SocketData} {
		for _, c := range []struct{ method, path, body string }{
			{"POST", "/v1/derive", `{"identity":"fz","protocol":"tls1.3","kdf":"sha256"}`},
			{"GET", "/v1/psks", ""},
			{"POST", "/v1/psks/delete", `{"identity_hex":"667a"}`},
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
	if _, err := v.Get([]byte("fz")); err != nil {
		t.Fatal("a request without peer credentials deleted a PSK")
	}
}
