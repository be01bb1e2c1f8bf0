package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/internal/metricstest"
	"github.com/pskvault/pskvault/vault"
)

// serveOne serves one request through ServeHTTP as caller on sock.
func serveOne(s *Server, sock Socket, caller *vault.Caller, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	ctx := context.WithValue(req.Context(), keySocket, sock)
	if caller != nil {
		ctx = context.WithValue(ctx, keyCaller, caller)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req.WithContext(ctx))
	return rec
}

func scrape(t *testing.T, s *Server, caller *vault.Caller) metricstest.Families {
	t.Helper()
	rec := serveOne(s, SocketAdmin, caller, "GET", "/metrics", "")
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	fams, err := metricstest.Parse(rec.Body.String())
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func want(t *testing.T, fams metricstest.Families, v float64, name string, labels ...string) {
	t.Helper()
	got, ok := fams.Value(name, labels...)
	if !ok || got != v {
		t.Errorf("%s%v = %v (found %v), want %v", name, labels, got, ok, v)
	}
}

// TestMetricsCounts: derivations by result and role, requests by endpoint,
// refusals on the admin socket, PSK counts and the backend gauge, as a
// scraper parses them; /metrics is for admins on the admin socket only,
// and neither it nor /v1/health writes audit lines.
func TestMetricsCounts(t *testing.T) {
	v := testVault(t)
	var audit bytes.Buffer
	s := NewServerWith(v, Options{Audit: NewAudit(&audit)})
	admin := &vault.Caller{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), PID: 1}
	other := &vault.Caller{UID: 54321, GID: 54321, PID: 2}
	derive := func(caller *vault.Caller, body string) int {
		return serveOne(s, SocketData, caller, "POST", "/v1/derive", body).Code
	}
	for range 3 {
		if c := derive(admin, `{"identity":"fz","protocol":"tls1.3","kdf":"sha256"}`); c != 200 {
			t.Fatalf("derive: %d", c)
		}
	}
	if c := derive(admin, `{"identity":"nope","protocol":"tls1.3","kdf":"sha256"}`); c != 404 {
		t.Fatalf("derive of an unknown PSK: %d", c)
	}
	for range 2 {
		if c := derive(other, `{"identity":"fz","protocol":"tls1.3","kdf":"sha256"}`); c != 404 {
			t.Fatalf("derive by a caller not in the access list: %d", c)
		}
	}
	if c := derive(admin, `{"identity":"fz","protocol":"tls1.3","kdf":"sha256","role":"server"}`); c < 400 {
		t.Fatalf("derive as the server of a PSK whose server is node-b: %d", c)
	}
	if c := derive(admin, `{"identity":"fz"`); c != 400 {
		t.Fatalf("malformed derive: %d", c)
	}
	if c := serveOne(s, SocketAdmin, other, "GET", "/metrics", "").Code; c != 403 {
		t.Fatalf("GET /metrics by a non-admin: %d", c)
	}
	if c := serveOne(s, SocketData, admin, "GET", "/metrics", "").Code; c != 404 {
		t.Fatalf("GET /metrics on the data socket: %d", c)
	}
	for _, sock := range []Socket{SocketAdmin, SocketData} {
		caller := other
		if sock == SocketAdmin {
			caller = admin
		}
		rec := serveOne(s, sock, caller, "GET", "/v1/health", "")
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"status":"ok"`) {
			t.Fatalf("%s health: %d %s", sock, rec.Code, rec.Body)
		}
	}
	auditBefore := strings.Count(audit.String(), "\n")

	fams := scrape(t, s, admin)
	want(t, fams, 3, "pskvault_derives_total", "result", "ok", "role", "client", "backend", "soft")
	want(t, fams, 1, "pskvault_derives_total", "result", "not_found", "role", "none")
	want(t, fams, 2, "pskvault_derives_total", "result", "denied", "role", "none")
	want(t, fams, 1, "pskvault_derives_total", "result", "policy", "role", "none")
	want(t, fams, 1, "pskvault_derives_total", "result", "bad_request", "role", "none")
	if sum := fams.Sum("pskvault_derives_total"); sum != 8 {
		t.Errorf("derives in all: %v, want 8", sum)
	}
	want(t, fams, 8, "pskvault_request_duration_seconds", "socket", "data", "endpoint", "derive")
	want(t, fams, 1, "pskvault_request_duration_seconds", "socket", "data", "endpoint", "other")
	want(t, fams, 1, "pskvault_refused_connections_total", "socket", "admin", "reason", "not_admin")
	want(t, fams, 0, "pskvault_refused_connections_total", "socket", "data", "reason", "conn_limit")
	want(t, fams, 1, "pskvault_psks", "state", "active")
	want(t, fams, 0, "pskvault_psks", "state", "revoked")
	want(t, fams, 1, "pskvault_backend_up", "backend", "soft")
	want(t, fams, 0, "pskvault_audit_write_failures_total")
	// The soft backend's in-process calls are not timed (TestMetricsScrape
	// checks a TPM's).
	want(t, fams, 0, "pskvault_backend_operation_duration_seconds", "op", "hmac")
	if _, ok := fams.Value("pskvault_psk_next_expiry_seconds"); ok {
		t.Error("next expiry reported with no PSK expiring")
	}
	for _, l := range fams.LabelNames("pskvault_") {
		switch l {
		case "result", "role", "backend", "socket", "endpoint", "op", "reason", "state", "le", "version", "node":
		default:
			t.Errorf("label %q on a pskvault_ metric: only fixed, small sets of values are allowed", l)
		}
	}
	if strings.Contains(serveOne(s, SocketAdmin, admin, "GET", "/metrics", "").Body.String(), "fz") {
		t.Error("the exposition names an identity")
	}
	if n := strings.Count(audit.String(), "\n"); n != auditBefore {
		t.Errorf("scrapes wrote %d audit lines", n-auditBefore)
	}
	for _, l := range strings.Split(strings.TrimSpace(audit.String()), "\n") {
		if strings.Contains(l, `"op":"health"`) || strings.Contains(l, `"op":"metrics","result":"ok"`) {
			t.Errorf("audit line for a probe or a scrape: %s", l)
		}
	}
	if !strings.Contains(audit.String(), `"op":"metrics"`) {
		t.Error("the refused scrape by a non-admin is not audited")
	}

	// Next expiry: a PSK expiring in an hour.
	if _, err := v.Import(context.Background(), vault.ImportRequest{Identity: []byte("soon"), Key: randomKey(t), Hash: 1, ClientNode: "node-a", ServerNode: "node-b", NotAfter: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	fams = scrape(t, s, admin)
	if sec, ok := fams.Value("pskvault_psk_next_expiry_seconds"); !ok || sec < 3500 || sec > 3600 {
		t.Errorf("next expiry in %v s (found %v), want about 3600", sec, ok)
	}
	want(t, fams, 2, "pskvault_psks", "state", "active")
}

func randomKey(t *testing.T) []byte {
	k := make([]byte, 32)
	f, err := os.Open("/dev/urandom")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	io.ReadFull(f, k)
	return k
}

// TestMetricsListener: the TCP listener serves the exposition and
// /healthz, and nothing else: no key, no status, no admin endpoint.
func TestMetricsListener(t *testing.T) {
	s := NewServerWith(testVault(t), Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs, _ := s.ServeMetrics(l)
	defer hs.Close()
	base := "http://" + l.Addr().String()
	get := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("GET", "/metrics", ""); code != 200 || !strings.Contains(body, "pskvault_derives_total") {
		t.Errorf("GET /metrics: %d %.200s", code, body)
	}
	if code, body := get("GET", "/healthz", ""); code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Errorf("GET /healthz: %d %s", code, body)
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/derive", `{"identity":"fz","protocol":"tls1.3","kdf":"sha256"}`},
		{"GET", "/v1/status", ""},
		{"GET", "/v1/health", ""},
		{"GET", "/v1/psks", ""},
		{"POST", "/metrics", ""},
	} {
		if code, body := get(c.method, c.path, c.body); code != 404 && code != 405 {
			t.Errorf("%s %s on the metrics listener: %d %s, want 404", c.method, c.path, code, body)
		}
	}
}

// syncLog is a log destination safe for concurrent writes.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRefusalsSummarized: a connect flood over the cap is counted per
// connection in the metrics and logged in a few summary lines whose
// counts add up to every refusal (the tail of the flood included).
func TestRefusalsSummarized(t *testing.T) {
	old := refusalLogEvery
	refusalLogEvery = 300 * time.Millisecond
	defer func() { refusalLogEvery = old }()
	var logBuf syncLog
	s := NewServerWith(testVault(t), Options{Log: slog.New(slog.NewTextHandler(&logBuf, nil)), MaxConns: 2})
	path := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ss, _, err := s.Serve(l, SocketData)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	// Two connections fill the cap. Each is answered once before the
	// flood, so both are known to be admitted: the listener's acceptors
	// run in parallel, and a connection dialled later could otherwise be
	// admitted first and a held one refused.
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /v1/health HTTP/1.1\r\nHost: pskvault\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("a held connection: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.SetDeadline(time.Time{})
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// Each refused connection gets its 503 before it is closed.
	refused := 0
	end := time.Now().Add(1200 * time.Millisecond)
	for time.Now().Before(end) {
		c, err := net.Dial("unix", path)
		if err != nil {
			continue
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(b), CodeTooManyConnections) {
			t.Fatalf("a connection over the cap: %q", b)
		}
		refused++
	}
	if refused < 20 {
		t.Fatalf("only %d connections refused", refused)
	}
	// The tail is summed up when its period ends.
	logged := func() (lines, sum int) {
		for _, line := range strings.Split(logBuf.String(), "\n") {
			if !strings.Contains(line, "connections refused over the limits") {
				continue
			}
			lines++
			var n int
			if i := strings.Index(line, " refused="); i >= 0 {
				fmt.Sscan(line[i+len(" refused="):], &n)
			}
			sum += n
		}
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, sum := logged(); sum == refused || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	lines, sum := logged()
	if sum != refused {
		t.Errorf("summary lines count %d refusals, want %d:\n%s", sum, refused, logBuf.String())
	}
	if max := int(1200*time.Millisecond/refusalLogEvery) + 2; lines > max {
		t.Errorf("%d summary lines for a %v flood, want at most %d (one per %v)", lines, 1200*time.Millisecond, max, refusalLogEvery)
	}
	if !strings.Contains(logBuf.String(), fmt.Sprintf("conn_limit=%d", refused)) && lines == 1 {
		t.Errorf("summary does not give the reason: %s", logBuf.String())
	}
	if n := strings.Count(logBuf.String(), "\n"); n != lines {
		t.Errorf("%d log lines besides the %d summaries:\n%s", n-lines, lines, logBuf.String())
	}
	fams := scrape(t, s, &vault.Caller{UID: uint32(os.Geteuid())})
	want(t, fams, float64(refused), "pskvault_refused_connections_total", "socket", "data", "reason", "conn_limit")
	t.Logf("%d refused connections, %d summary lines", refused, lines)
}

// emfileListener fails every other Accept with EMFILE, then closes.
type emfileListener struct {
	mu    sync.Mutex
	n     int
	limit int
	done  chan struct{}
}

func (l *emfileListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.n++
	n := l.n
	l.mu.Unlock()
	if n > l.limit {
		<-l.done
		return nil, net.ErrClosed
	}
	if n%2 == 1 {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

func (l *emfileListener) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}

func (l *emfileListener) Addr() net.Addr { return &net.UnixAddr{Name: "emfile", Net: "unix"} }

// TestAcceptFailuresSummarized: accepts failing for want of descriptors
// (between successful ones, as under a connection flood) are logged in a
// line at most per period, not one each.
func TestAcceptFailuresSummarized(t *testing.T) {
	var logBuf syncLog
	s := NewServerWith(testVault(t), Options{Log: slog.New(slog.NewTextHandler(&logBuf, nil))})
	l := &emfileListener{limit: 400, done: make(chan struct{})}
	ss := newSocketServer(s, SocketData, l)
	errc := make(chan error, 1)
	go func() { errc <- ss.serve() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l.mu.Lock()
		n := l.n
		l.mu.Unlock()
		if n > l.limit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d accepts in 30 s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ss.Close()
	<-errc
	if n := strings.Count(logBuf.String(), "accept failed"); n < 1 || n > 2 {
		t.Errorf("%d log lines for 200 failed accepts, want one (or two across a period):\n%s", n, logBuf.String())
	}
}

// failingWriter fails every write while broken is set.
type failingWriter struct {
	mu     sync.Mutex
	broken bool
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken {
		return 0, syscall.ENOSPC
	}
	return len(p), nil
}

// TestMetricsAuditFailure: a derivation whose audit line cannot be written
// is counted as audit_error (not ok), each failed line in
// pskvault_audit_write_failures_total, and health says 503
// audit_unavailable until the log works again.
func TestMetricsAuditFailure(t *testing.T) {
	w := &failingWriter{}
	s := NewServerWith(testVault(t), Options{Audit: NewAudit(w)})
	admin := &vault.Caller{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), PID: 1}
	const body = `{"identity":"fz","protocol":"tls1.3","kdf":"sha256"}`
	if rec := serveOne(s, SocketData, admin, "POST", "/v1/derive", body); rec.Code != 200 {
		t.Fatalf("derive: %d", rec.Code)
	}
	w.mu.Lock()
	w.broken = true
	w.mu.Unlock()
	for range 2 {
		if rec := serveOne(s, SocketData, admin, "POST", "/v1/derive", body); rec.Code != 503 || strings.Contains(rec.Body.String(), "ipskx") {
			t.Fatalf("derive with the audit log failing: %d %s", rec.Code, rec.Body)
		}
	}
	if rec := serveOne(s, SocketData, admin, "GET", "/v1/health", ""); rec.Code != 503 || !strings.Contains(rec.Body.String(), CodeAuditUnavailable) {
		t.Errorf("health with the audit log failing: %d %s", rec.Code, rec.Body)
	}
	fams := scrape(t, s, admin)
	want(t, fams, 1, "pskvault_derives_total", "result", "ok", "role", "client")
	want(t, fams, 2, "pskvault_derives_total", "result", "audit_error", "role", "client")
	want(t, fams, 2, "pskvault_audit_write_failures_total")
	want(t, fams, 1, "pskvault_backend_up")
	w.mu.Lock()
	w.broken = false
	w.mu.Unlock()
	if rec := serveOne(s, SocketData, admin, "POST", "/v1/derive", body); rec.Code != 200 {
		t.Fatalf("derive once the audit log works: %d", rec.Code)
	}
	if rec := serveOne(s, SocketData, admin, "GET", "/v1/health", ""); rec.Code != 200 {
		t.Errorf("health once the audit log works: %d %s", rec.Code, rec.Body)
	}
}

// TestAdminStatusCounts: the admin socket's status gives the counts by
// state and the next expiry (from vault.Stats); the data socket's does not.
func TestAdminStatusCounts(t *testing.T) {
	v := testVault(t)
	s := NewServerWith(v, Options{})
	admin := &vault.Caller{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), PID: 1}
	soon := time.Now().Add(time.Hour).Truncate(time.Second)
	if _, err := v.Import(context.Background(), vault.ImportRequest{Identity: []byte("soon"), Key: randomKey(t), Hash: 1, ClientNode: "node-a", ServerNode: "node-b", NotAfter: soon}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Revoke(context.Background(), []byte("fz"), "test"); err != nil {
		t.Fatal(err)
	}
	get := func(sock Socket) Status {
		rec := serveOne(s, sock, admin, "GET", "/v1/status", "")
		var st Status
		if err := json.Unmarshal(rec.Body.Bytes(), &st); rec.Code != 200 || err != nil {
			t.Fatalf("%s status: %d %v %s", sock, rec.Code, err, rec.Body)
		}
		return st
	}
	st := get(SocketAdmin)
	if st.PSKsByState["active"] != 1 || st.PSKsByState["revoked"] != 1 || st.PSKsByState["expired"] != 0 || st.NextExpiry == nil || !st.NextExpiry.Equal(soon) {
		t.Errorf("admin status: psks_by_state %v, next_expiry %v; want 1 active, 1 revoked, next expiry %v", st.PSKsByState, st.NextExpiry, soon)
	}
	if st := get(SocketData); st.PSKsByState != nil || st.NextExpiry != nil {
		t.Errorf("data status gives counts by state or the next expiry: %+v", st)
	}
}
