package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/pskvault/pskvault/backends/soft"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// testVault is a vault of node-a holding one PSK, "fz" (node-a to
// node-b), with the key fuzzKey.
func testVault(tb testing.TB) *vault.Vault {
	tb.Helper()
	ctx := context.Background()
	dir := filepath.Join(tb.TempDir(), "state")
	if err := vault.Init(ctx, dir, vault.Config{NodeID: "node-a", Backend: "soft"}); err != nil {
		tb.Fatal(err)
	}
	v, err := vault.Open(ctx, dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { v.Close() })
	if _, err := v.Import(ctx, vault.ImportRequest{Identity: []byte("fz"), Key: append([]byte{}, fuzzKey...), Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"}); err != nil {
		tb.Fatal(err)
	}
	return v
}

// serveConnTest serves the admin protocol on a fresh Unix socket; this
// process is its caller (root or the daemon's uid: an administrator).
func serveConnTest(t *testing.T) (string, *SocketServer) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ss, _, err := NewServerWith(testVault(t), Options{}).Serve(l, SocketAdmin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	return sock, ss
}

type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, sock string) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

// exchange writes raw and reads one answer: its status, its JSON error
// code (if any) and whether the daemon said it will close the connection.
func (c *rawConn) exchange(t *testing.T, raw string) (status int, code string, closing bool) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return c.answer(t)
}

func (c *rawConn) answer(t *testing.T) (status int, code string, closing bool) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	var e Error
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(body, &e); err != nil || e.Code == "" {
			t.Fatalf("status %d without a JSON error: %q", resp.StatusCode, body)
		}
	}
	return resp.StatusCode, e.Code, resp.Close
}

// closed reports whether the daemon has closed the connection.
func (c *rawConn) closed() bool {
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.br.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

const statusReq = "GET /v1/status HTTP/1.1\r\nHost: pskvault\r\n\r\n"

func deriveReq(extra, body string) string {
	return "POST /v1/derive HTTP/1.1\r\nHost: pskvault\r\nContent-Type: application/json\r\n" + extra +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

const deriveBody = `{"identity":"fz","protocol":"tls1.3","kdf":"sha256"}`

func TestConnKeepAlive(t *testing.T) {
	sock, _ := serveConnTest(t)
	c := dialRaw(t, sock)
	for i := 0; i < 5; i++ {
		for _, req := range []string{statusReq, deriveReq("", deriveBody)} {
			if st, code, closing := c.exchange(t, req); st != 200 || closing {
				t.Fatalf("request %d on a kept-alive connection: status %d %s, closing %v", i, st, code, closing)
			}
		}
	}
	// Two requests written at once are answered in order.
	if _, err := io.WriteString(c, statusReq+deriveReq("", `{"identity":"none","protocol":"tls1.3","kdf":"sha256"}`)); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := c.answer(t); st != 200 {
		t.Fatalf("first of two pipelined requests: %d", st)
	}
	if st, code, _ := c.answer(t); st != 404 || code != CodeNotFound {
		t.Fatalf("second of two pipelined requests: %d %s", st, code)
	}
}

// TestConnRefusals: each malformed request gets its own status and JSON
// error, and the connection is closed after it; the daemon serves on.
func TestConnRefusals(t *testing.T) {
	sock, _ := serveConnTest(t)
	for _, tc := range []struct {
		name, raw string
		status    int
		code      string
	}{
		{"garbage", "HELLO\r\n\r\n", 400, CodeBadRequest},
		{"bad header line", "GET /v1/status HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400, CodeBadRequest},
		{"head over 16 KiB", "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 20<<10) + "\r\n\r\n", 431, CodeTooLarge},
		{"HTTP/1.1 without Host", "GET /v1/status HTTP/1.1\r\n\r\n", 400, CodeBadRequest},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, CodeBadRequest},
		{"unknown Expect", "GET /v1/status HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", 417, CodeBadRequest},
		{"100-continue for a body over MaxBody", fmt.Sprintf("POST /v1/derive HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", MaxBody+1), 413, CodeTooLarge},
		{"body over MaxBody", deriveReq("", `{"identity":"`+strings.Repeat("a", MaxBody)+`"}`), 413, CodeTooLarge},
		{"bad Content-Length", "POST /v1/derive HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, sock)
			st, code, _ := c.exchange(t, tc.raw)
			if st != tc.status || code != tc.code {
				t.Fatalf("got %d %s, want %d %s", st, code, tc.status, tc.code)
			}
			if !c.closed() {
				t.Fatal("connection kept open after a refused request")
			}
			if st, _, _ := dialRaw(t, sock).exchange(t, statusReq); st != 200 {
				t.Fatalf("daemon stopped serving: %d", st)
			}
		})
	}
}

func TestConnExpectContinue(t *testing.T) {
	sock, _ := serveConnTest(t)
	c := dialRaw(t, sock)
	head := "POST /v1/derive HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: " + strconv.Itoa(len(deriveBody)) + "\r\n\r\n"
	io.WriteString(c, head)
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q %v, want 100 Continue before the body", line, err)
	}
	if blank, _ := c.br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("100 Continue not followed by a blank line: %q", blank)
	}
	if st, code, _ := c.exchange(t, deriveBody); st != 200 {
		t.Fatalf("derive after 100 Continue: %d %s", st, code)
	}
}

func TestConnHTTP10AndChunked(t *testing.T) {
	sock, _ := serveConnTest(t)
	c := dialRaw(t, sock)
	if st, _, closing := c.exchange(t, "GET /v1/status HTTP/1.0\r\n\r\n"); st != 200 || !closing || !c.closed() {
		t.Fatalf("HTTP/1.0: status %d, closing %v: want 200 and one answer per connection", st, closing)
	}
	c = dialRaw(t, sock)
	chunked := "POST /v1/derive HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"10\r\n" + deriveBody[:16] + "\r\n" + strings.ToLower(strings.TrimLeft(hex.EncodeToString([]byte{byte(len(deriveBody) - 16)}), "0")) + "\r\n" + deriveBody[16:] + "\r\n0\r\n\r\n"
	if st, code, closing := c.exchange(t, chunked); st != 200 || closing {
		t.Fatalf("chunked derive: %d %s closing %v", st, code, closing)
	}
	if st, _, _ := c.exchange(t, statusReq); st != 200 {
		t.Fatalf("request after a chunked one: %d", st)
	}
}

// TestConnShutdown: Shutdown closes idle connections at once, lets a
// request already being read finish, and then returns.
func TestConnShutdown(t *testing.T) {
	sock, ss := serveConnTest(t)
	idle := dialRaw(t, sock)
	if st, _, _ := idle.exchange(t, statusReq); st != 200 {
		t.Fatal(st)
	}
	busy := dialRaw(t, sock)
	body := deriveReq("", deriveBody)
	io.WriteString(busy, body[:20]) // mid-request
	time.Sleep(50 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- ss.Shutdown(ctx)
	}()
	if !idle.closed() {
		t.Fatal("Shutdown left an idle connection open")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a request half read", err)
	case <-time.After(100 * time.Millisecond):
	}
	if st, _, closing := busy.exchange(t, body[20:]); st != 200 || !closing {
		t.Fatalf("request in flight at Shutdown: status %d closing %v, want 200 and close", st, closing)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := net.Dial("unix", sock); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

// TestConnShutdownAnswerInFlight: a connection whose answer goes out just
// after Shutdown began (past the answer's keep-alive decision) is closed
// once the answer is out, not left waiting IdleTimeout for another request
// while Shutdown waits for it.
func TestConnShutdownAnswerInFlight(t *testing.T) {
	sock, ss := serveConnTest(t)
	done := make(chan error, 1)
	var once sync.Once
	hook := func([]byte) {
		once.Do(func() {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				done <- ss.Shutdown(ctx)
			}()
			for !ss.isClosing() {
				time.Sleep(time.Millisecond)
			}
		})
	}
	ss.testHookRequestDone.Store(&hook)
	c := dialRaw(t, sock)
	if st, _, _ := c.exchange(t, statusReq); st != 200 {
		t.Fatal(st)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown still waits for a connection whose answer is out")
	}
	if !c.closed() {
		t.Fatal("connection left open after Shutdown")
	}
}

// TestConnWipesBuffers: the answer buffer that held a derived key is zero
// once the answer is sent, and so is the read buffer that held an imported
// key once its request is done.
func TestConnWipesBuffers(t *testing.T) {
	w := &responseWriter{header: http.Header{}}
	w.Write(fuzzKey)
	a, b := net.Pipe()
	go io.Copy(io.Discard, b)
	if err := w.send(a, nil, true); err != nil {
		t.Fatal(err)
	}
	buf := w.body.Bytes()[:w.body.Cap()]
	w.wipe()
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Fatal("answer buffer not wiped")
	}

	// The read side, through a real connection: an import carries the key.
	sock, ss := serveConnTest(t)
	key := make([]byte, 32)
	rand.Read(key)
	seen := make(chan []byte, 4)
	hook := func(buf []byte) { seen <- bytes.Clone(buf) }
	ss.testHookRequestDone.Store(&hook)
	c := dialRaw(t, sock)
	env, err := MarshalEnvelope(PSKSpec{Identity: "wiped", Client: "node-a", Server: "node-b"}, key)
	if err != nil {
		t.Fatal(err)
	}
	req := fmt.Sprintf("POST /v1/psks/import HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", ContentTypeEnvelope, len(env), env)
	if st, code, _ := c.exchange(t, req); st != http.StatusCreated {
		t.Fatalf("import: %d %s", st, code)
	}
	rb := <-seen
	if len(rb) == 0 {
		t.Fatal("no read buffer seen")
	}
	if bytes.Contains(rb, key) || bytes.Contains(rb, []byte(`"wiped"`)) {
		t.Fatalf("read buffer (%d bytes) still holds the import request after it was served", len(rb))
	}
}

// FuzzConn feeds arbitrary bytes to one admin connection, as the client
// root would send them: the daemon answers only with well-formed HTTP/1.1
// (a JSON error for anything refused), never with a 5xx other than 505,
// never with the EPSK, and always finishes with the connection.
func FuzzConn(f *testing.F) {
	for _, s := range []string{
		statusReq,
		deriveReq("", deriveBody),
		statusReq + deriveReq("", deriveBody) + "GET /v1/psks HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /v1/status HTTP/1.0\r\n\r\n",
		"POST /v1/derive HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"ide\r\n0\r\n\r\n",
		"POST /v1/derive HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
		"HEAD /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /v1/psks/import HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.pskvault.envelope\r\nContent-Length: 7\r\n\r\n\x00\x00\x00\x02{}a",
		"POST /v1/psks/show HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"GET http://other/v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
		"\r\n\r\nGET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	v := testVault(f)
	s := NewServerWith(v, Options{})
	f.Fuzz(func(t *testing.T, in []byte) {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		srv, cli := fdConn(t, fds[0]), fdConn(t, fds[1])
		defer cli.Close()
		ss := newSocketServer(s, SocketAdmin, nil)
		pc := &peerConn{UnixConn: srv, caller: &vault.Caller{UID: 0}, release: func() {}}
		ss.track(pc)
		finished := make(chan struct{})
		go func() { ss.serveConn(pc); close(finished) }()
		go func() { cli.Write(in); cli.CloseWrite() }()
		cli.SetReadDeadline(time.Now().Add(10 * time.Second))
		out, err := io.ReadAll(cli)
		// A connection closed with unread input (the rest of a refused
		// request) ends in ECONNRESET instead of EOF; on a Unix socket the
		// answers queued before it are still read first.
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading the answers: %v", err)
		}
		select {
		case <-finished:
		case <-time.After(5 * time.Second):
			t.Fatal("the connection was not finished after its client hung up")
		}
		if bytes.Contains(out, fuzzKey) || bytes.Contains(out, []byte(hex.EncodeToString(fuzzKey))) {
			t.Fatal("an answer holds the EPSK")
		}
		if len(out) > 0 && !bytes.HasPrefix(out, []byte("HTTP/1.1 ")) {
			t.Fatalf("answer is not HTTP/1.1: %q", out[:min(len(out), 40)])
		}
		// The first answer (HEAD and 1xx make later ones ambiguous
		// without the requests) must parse, and an error must be JSON.
		if len(out) == 0 {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
		if err != nil {
			t.Fatalf("first answer does not parse: %v: %q", err, out[:min(len(out), 200)])
		}
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusHTTPVersionNotSupported {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if resp.StatusCode >= 400 && !bytes.HasPrefix(bytes.TrimLeft(in, "\r\n"), []byte("HEAD ")) {
			var e Error
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Code == "" {
				t.Fatalf("status %d without a JSON error", resp.StatusCode)
			}
		}
	})
}

func fdConn(t *testing.T, fd int) *net.UnixConn {
	t.Helper()
	file := os.NewFile(uintptr(fd), "socketpair")
	defer file.Close()
	c, err := net.FileConn(file)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.UnixConn)
}
