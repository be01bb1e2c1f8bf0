package api

import (
	"context"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pskvault/pskvault/vault"
)

// BenchmarkServeDerive is one derive through the server's request handling
// (ServeHTTP: routing, caller and access check, soft HMAC, audit line to a
// discarding writer, metrics), without a socket, so that the cost of the
// instrumentation is not lost in the socket's noise (docs/BENCHMARKS.md,
// "Metrics": run before and after).
func BenchmarkServeDerive(b *testing.B) {
	v := testVault(b)
	s := NewServerWith(v, Options{Audit: NewAudit(io.Discard)})
	caller := &vault.Caller{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), PID: 1}
	const body = `{"identity":"fz","protocol":"tls1.3","kdf":"sha256"}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/derive", strings.NewReader(body))
		ctx := context.WithValue(context.WithValue(req.Context(), keySocket, SocketData), keyCaller, caller)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req.WithContext(ctx))
		if rec.Code != 200 {
			b.Fatalf("derive: %d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkInstrumentationPerDerive is what the metrics add to one
// derive, through the functions the request path calls: the request
// histogram (one more clock read) and the derive counter; on a hardware
// backend also the timing of its HMAC call (two clock reads) and its
// observation. The soft backend's calls are not timed.
func BenchmarkInstrumentationPerDerive(b *testing.B) {
	s := NewServerWith(testVault(b), Options{})
	start := time.Now()
	b.Run("backend=soft", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.metrics.countDerive(resultOf(nil), "client")
			s.metrics.observeRequest(SocketData, "derive", time.Since(start))
		}
	})
	b.Run("backend=hardware", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			t0 := time.Now()
			s.metrics.observeBackend(vault.OpHMAC, time.Since(t0), nil)
			s.metrics.countDerive(resultOf(nil), "client")
			s.metrics.observeRequest(SocketData, "derive", time.Since(start))
		}
	})
	b.Run("clock=now+since", func(b *testing.B) {
		var d time.Duration
		for b.Loop() {
			t0 := time.Now()
			d += time.Since(t0)
		}
		_ = d
	})
}
