package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/internal/squatter"
	"github.com/pskvault/pskvault/internal/syncbuf"
)

// binary is the pskvault executable built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	squatter.Main() // when this binary runs as another uid's fake daemon
	dir, err := os.MkdirTemp("", "pskvault-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "pskvault")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("build pskvault: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a vault and, once started, its daemon.
type node struct {
	t      *testing.T
	dir    string
	socket string
	log    *syncbuf.Buffer
	cmd    *exec.Cmd
}

func newNode(t *testing.T, id string, backend string) *node {
	t.Helper()
	root := t.TempDir()
	n := &node{t: t, dir: filepath.Join(root, "state"), socket: filepath.Join(root, "run", "pskvault.sock")}
	if out, code := n.run(nil, "init", "--node-id", id, "--backend", backend); code != 0 {
		t.Fatalf("init: exit %d: %s", code, out)
	}
	return n
}

// run runs the CLI against this node and returns combined output and exit code.
func (n *node) run(stdin []byte, args ...string) (string, int) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"--state-dir", n.dir, "--socket", n.socket}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		n.t.Fatalf("run pskvault: %v", err)
	}
	return string(out), 0
}

func (n *node) start() {
	n.t.Helper()
	n.log = &syncbuf.Buffer{}
	n.cmd = exec.Command(binary, "--state-dir", n.dir, "--socket", n.socket, "serve")
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(n.stop)
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", n.socket); err == nil {
			c.Close()
			return
		}
		if i > 200 {
			n.t.Fatalf("daemon did not start: %s", n.log)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (n *node) stop() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- n.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		n.cmd.Process.Kill()
		<-done
		n.t.Error("daemon did not stop on SIGINT")
	}
	n.cmd = nil
}

// http sends a raw request to the daemon.
func (n *node) http(method, path, ctype string, body io.Reader) (int, []byte) {
	n.t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", n.socket)
	}}, Timeout: 20 * time.Second}
	req, _ := http.NewRequest(method, "http://pskvault"+path, body)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func writeKey(t *testing.T, key []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.hex")
	// Whitespace and line breaks are ignored by --key-file.
	h := hex.EncodeToString(key)
	if err := os.WriteFile(p, []byte(h[:10]+" \n\t"+h[10:]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testKey is a fixed key that passes the entropy check: the first n bytes
// of SHA-256("pskvault test key" || counter) blocks, so testKey(32) is a
// prefix of testKey(48). (Counting patterns such as 0xa0 + 7i are refused
// as arithmetic progressions.)
func testKey(n int) []byte {
	var k []byte
	for c := byte(0); len(k) < n; c++ {
		sum := sha256.Sum256(append([]byte("pskvault test key"), c))
		k = append(k, sum[:]...)
	}
	return k[:n]
}

// TestEndToEnd drives the real binary through init, serve, import, derive
// and delete, with the refusals the walking-skeleton issue names.
func TestEndToEnd(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	epsk := testKey(32)
	var responses bytes.Buffer

	out, code := a.run(nil, "psk", "import", "--identity", "edge-1", "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, epsk))
	if code != 0 {
		t.Fatalf("import: exit %d: %s", code, out)
	}
	responses.WriteString(out)

	t.Run("derive matches the importer", func(t *testing.T) {
		for _, c := range []struct{ proto, kdf string }{{"tls1.3", "sha256"}, {"tls1.3", "sha384"}, {"dtls1.3", "sha256"}, {"dtls1.3", "sha384"}} {
			out, code := a.run(nil, "derive", "--identity", "edge-1", "--context-hex", "0102", "--protocol", c.proto, "--kdf", c.kdf, "--json")
			if code != 0 {
				t.Fatalf("derive %s/%s: exit %d: %s", c.proto, c.kdf, code, out)
			}
			responses.WriteString(out)
			var got struct{ ImportedIdentity, IPSKX, Role string }
			if err := json.Unmarshal([]byte(out), &struct {
				ImportedIdentity *string `json:"imported_identity"`
				IPSKX            *string `json:"ipskx"`
				Role             *string `json:"role"`
			}{&got.ImportedIdentity, &got.IPSKX, &got.Role}); err != nil {
				t.Fatalf("derive --json output is not JSON: %v", err)
			}
			p, _ := importer.ParseProtocol(c.proto)
			k, _ := importer.ParseKDF(c.kdf)
			wire, ipskx, err := importer.Import(importer.SHA256, epsk, importer.Identity{External: []byte("edge-1"), Context: []byte{1, 2}, Protocol: p, KDF: k})
			if err != nil {
				t.Fatal(err)
			}
			if got.ImportedIdentity != hex.EncodeToString(wire) {
				t.Errorf("%s/%s: imported_identity differs from the importer's", c.proto, c.kdf)
			}
			if got.IPSKX != hex.EncodeToString(ipskx) {
				t.Errorf("%s/%s: ipskx differs from the importer's (values withheld)", c.proto, c.kdf)
			}
			if got.Role != "client" {
				t.Errorf("role %q, want client", got.Role)
			}
		}
	})

	t.Run("15-byte key refused", func(t *testing.T) {
		out, code := a.run(nil, "psk", "import", "--identity", "short", "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, testKey(15)))
		if code == 0 || !strings.Contains(out, "shorter than 128 bits") {
			t.Fatalf("15-byte key: exit %d: %s", code, out)
		}
		if strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("error is not one line: %q", out)
		}
	})

	t.Run("PSK between two other nodes refused", func(t *testing.T) {
		out, code := a.run(nil, "psk", "import", "--identity", "other", "--client", "node-x", "--server", "node-y", "--key-file", writeKey(t, testKey(32)))
		if code == 0 || !strings.Contains(out, "not party") {
			t.Fatalf("foreign PSK: exit %d: %s", code, out)
		}
	})

	t.Run("key never on argv", func(t *testing.T) {
		out, code := a.run(nil, "psk", "import", "--identity", "argv", "--client", "node-a", "--server", "node-b", hex.EncodeToString(testKey(32)))
		if code != 2 || !strings.Contains(out, "never taken on the command line") {
			t.Fatalf("key on argv: exit %d: %s", code, out)
		}
		if strings.Contains(out, hex.EncodeToString(testKey(32))) {
			t.Fatal("the error echoed the key given on the command line")
		}
	})

	t.Run("bad requests get a 4xx and the daemon keeps serving", func(t *testing.T) {
		cases := []struct {
			name, method, path, ctype, body string
			status                          int
			code                            string
		}{
			{"malformed JSON", "POST", "/v1/derive", "application/json", `{"identity":`, 400, "bad_request"},
			{"unknown field", "POST", "/v1/derive", "application/json", `{"identity":"edge-1","protocol":"tls1.3","kdf":"sha256","x":1}`, 400, "bad_request"},
			{"bad hex", "POST", "/v1/derive", "application/json", `{"identity_hex":"zz","protocol":"tls1.3","kdf":"sha256"}`, 400, "bad_hex"},
			{"unknown PSK", "POST", "/v1/derive", "application/json", `{"identity":"nope","protocol":"tls1.3","kdf":"sha256"}`, 404, "not_found"},
			{"unknown protocol", "POST", "/v1/derive", "application/json", `{"identity":"edge-1","protocol":"tls9","kdf":"sha256"}`, 400, "unknown_protocol"},
			{"TLS 1.2", "POST", "/v1/derive", "application/json", `{"identity":"edge-1","protocol":"tls1.2","kdf":"sha256"}`, 400, "legacy_protocol"},
			{"unknown KDF", "POST", "/v1/derive", "application/json", `{"identity":"edge-1","protocol":"tls1.3","kdf":"md5"}`, 400, "unknown_kdf"},
			{"oversized body", "POST", "/v1/derive", "application/json", `{"identity":"` + strings.Repeat("a", api.MaxBody) + `"}`, 413, "too_large"},
			{"unknown endpoint", "GET", "/v1/nope", "", "", 404, "not_found"},
			{"import without content type", "POST", "/v1/psks/import", "", "\x00\x00\x00\x02{}0123456789abcdef", 400, "bad_request"},
			{"import as octet-stream", "POST", "/v1/psks/import", "application/octet-stream", "0123456789abcdef", 400, "bad_request"},
			{"import unknown field", "POST", "/v1/psks/import", api.ContentTypeEnvelope, "\x00\x00\x00\x0b{\"bogus\":1}0123456789abcdef", 400, "bad_request"},
			{"import short envelope", "POST", "/v1/psks/import", api.ContentTypeEnvelope, "\x00\x00\x01\x00{}", 400, "bad_request"},
			{"import query parameter", "POST", "/v1/psks/import?identity=z", api.ContentTypeEnvelope, "\x00\x00\x00\x02{}0123456789abcdef", 400, "bad_request"},
		}
		for _, c := range cases {
			status, body := a.http(c.method, c.path, c.ctype, strings.NewReader(c.body))
			var e struct{ Code, Message string }
			if status != c.status || json.Unmarshal(body, &e) != nil || e.Code != c.code || e.Message == "" {
				t.Errorf("%s: got %d %s, want %d code %s", c.name, status, body, c.status, c.code)
			}
			responses.Write(body)
		}
		if out, code := a.run(nil, "psk", "list"); code != 0 || !strings.Contains(out, "edge-1") {
			t.Fatalf("daemon stopped serving after bad requests: %s", out)
		}
		if n := strings.Count(mustList(t, a), "\n"); n != 2 {
			t.Fatalf("bad requests changed the vault: %d lines in list", n)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if out, code := a.run(nil, "psk", "delete", "--identity", "edge-1"); code != 0 {
			t.Fatalf("delete: %s", out)
		}
		out, code := a.run(nil, "derive", "--identity", "edge-1")
		if code == 0 || !strings.Contains(out, "no such PSK") {
			t.Fatalf("derive after delete: exit %d: %s", code, out)
		}
	})

	a.stop()
	t.Run("no key bytes in state dir, logs or responses", func(t *testing.T) {
		prk, _ := importer.Extract(importer.SHA256, epsk)
		secrets := map[string][]byte{"EPSK": epsk, "PRK": prk, "EPSK hex": []byte(hex.EncodeToString(epsk)), "PRK hex": []byte(hex.EncodeToString(prk))}
		assertNowhere(t, secrets, map[string][]byte{"daemon log": a.log.Bytes(), "responses": responses.Bytes()}, a.dir)
	})

	t.Run("state files are private", func(t *testing.T) {
		filepath.WalkDir(a.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			st, _ := d.Info()
			if d.IsDir() && st.Mode().Perm() != 0o700 || !d.IsDir() && st.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %04o", p, st.Mode().Perm())
			}
			return nil
		})
	})
}

func mustList(t *testing.T, n *node) string {
	out, code := n.run(nil, "psk", "list")
	if code != 0 {
		t.Fatalf("list: %s", out)
	}
	return out
}

// TestDaemonRestart: records and keys survive a daemon restart.
func TestDaemonRestart(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	key := testKey(48)
	if out, code := a.run(nil, "psk", "import", "--identity", "r", "--hash", "sha384", "--client", "node-b", "--server", "node-a", "--key-file", "-"); code == 0 {
		t.Fatalf("import from empty stdin succeeded: %s", out)
	}
	if out, code := a.run([]byte(hex.EncodeToString(key)), "psk", "import", "--identity", "r", "--hash", "sha384", "--client", "node-b", "--server", "node-a", "--key-file", "-"); code != 0 {
		t.Fatalf("import: %s", out)
	}
	first, code := a.run(nil, "derive", "--identity", "r", "--json")
	if code != 0 {
		t.Fatal(first)
	}
	a.stop()
	if out, code := a.run(nil, "psk", "list"); code == 0 || !strings.Contains(out, "pskvault --state-dir") {
		t.Fatalf("no daemon: want a hint to start one, got exit %d: %s", code, out)
	}
	a.start()
	second, code := a.run(nil, "derive", "--identity", "r", "--json")
	if code != 0 || first != second {
		t.Fatalf("derive after restart differs or failed (exit %d)", code)
	}
	if !strings.Contains(second, `"role":"server"`) {
		t.Fatalf("role: %s", second)
	}
}

// TestCLIUsage: every verb has --help; unknown verbs and flags fail with a hint.
func TestCLIUsage(t *testing.T) {
	n := &node{t: t, dir: t.TempDir(), socket: filepath.Join(t.TempDir(), "s")}
	for name := range commands {
		out, code := n.run(nil, append(strings.Fields(name), "--help")...)
		if code != 0 || !strings.Contains(out, "Usage: pskvault "+name) {
			t.Errorf("%s --help: exit %d: %s", name, code, out)
		}
	}
	if out, code := n.run(nil, "frobnicate"); code != 2 || !strings.Contains(out, "unknown command") {
		t.Errorf("unknown verb: exit %d: %s", code, out)
	}
	if out, code := n.run(nil, "derive", "--bogus"); code != 2 || !strings.Contains(out, "hint") {
		t.Errorf("unknown flag: exit %d: %s", code, out)
	}
	if out, code := n.run(nil, "version"); code != 0 || !strings.HasPrefix(out, "pskvault ") {
		t.Errorf("version: %s", out)
	}
}

// TestDemo runs the demo as a user would.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "demo").CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"match=true", "node-c: refused", "does not match the PSK's node-identifier context", "demo complete"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if _, err := exec.LookPath("openssl"); err == nil && !strings.Contains(string(out), "s_server received") {
		t.Errorf("openssl is installed but the demo did no handshake:\n%s", out)
	}
}

// TestDemoServerGivesUp: an s_server that exits at once (here: a program
// that only fails) is noticed at once and tried three times, not waited on.
func TestDemoServerGivesUp(t *testing.T) {
	fail, err := exec.LookPath("false")
	if err != nil {
		t.Skip("no false(1)")
	}
	start := time.Now()
	_, err = startDemoServer(context.Background(), fail, "00", "00")
	if err == nil || !strings.Contains(err.Error(), "did not start") {
		t.Fatalf("got %v, want a did-not-start error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v to give up on a server that exits at once", d)
	}
}

// TestDataSocketDefault: serve opens a data socket for TLS stacks in a
// sibling directory of the admin socket's; it serves derive but not admin
// endpoints.
func TestDataSocketDefault(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	data := defaultDataSocket(a.socket)
	st, err := os.Stat(data)
	if err != nil || st.Mode().Type() != os.ModeSocket {
		t.Fatalf("no data socket at %s: %v", data, err)
	}
	dst, _ := os.Stat(filepath.Dir(data))
	ast, _ := os.Stat(filepath.Dir(a.socket))
	if filepath.Dir(data) == filepath.Dir(a.socket) || dst.Mode().Perm() != 0o755 || ast.Mode().Perm() != 0o700 {
		t.Fatalf("data dir %04o, admin dir %04o: want separate 0755 and 0700", dst.Mode().Perm(), ast.Mode().Perm())
	}
	if out, code := a.run(nil, "psk", "create", "--identity", "d", "--client", "node-a", "--server", "node-b", "--out", filepath.Join(t.TempDir(), "k")); code != 0 {
		t.Fatal(out)
	}
	if out, code := a.run(nil, "--data-socket", data, "derive", "--identity", "d"); code != 0 {
		t.Fatalf("derive on the data socket: %s", out)
	}
	dataNode := &node{t: t, dir: a.dir, socket: data}
	if out, code := dataNode.run(nil, "psk", "list"); code == 0 || !strings.Contains(out, "no endpoint") {
		t.Fatalf("the data socket served an admin endpoint: exit %d: %s", code, out)
	}

	b := newNode(t, "node-b", "soft")
	b.cmd = exec.Command(binary, "--state-dir", b.dir, "--socket", b.socket, "--data-socket", "none", "serve")
	b.log = &syncbuf.Buffer{}
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.stop)
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(b.socket); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if _, err := os.Stat(defaultDataSocket(b.socket)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("--data-socket none still made a data socket: %v", err)
	}
}

// TestSocketDirOwnedByOther: serve refuses a socket directory that another
// user controls (for example one planted in /tmp).
func TestSocketDirOwnedByOther(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown a directory to another user")
	}
	a := newNode(t, "node-a", "soft")
	planted := filepath.Join(t.TempDir(), "planted")
	if err := os.Mkdir(planted, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(planted, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	a.socket = filepath.Join(planted, "pskvault.sock")
	out, code := a.run(nil, "--data-socket", "none", "serve")
	if code == 0 || !strings.Contains(out, "belongs to uid 65534") {
		t.Fatalf("serve in a directory owned by another user: exit %d: %s", code, out)
	}
}

func TestDefaultDataSocket(t *testing.T) {
	for admin, want := range map[string]string{
		"/run/pskvault/admin/pskvault.sock": "/run/pskvault/data/pskvault.sock",
		"/tmp/x/run/s.sock":                 "/tmp/x/run-data/s.sock",
	} {
		if got := defaultDataSocket(admin); got != want {
			t.Errorf("defaultDataSocket(%s) = %s, want %s", admin, got, want)
		}
	}
}

// deriveJSON runs `derive --json` and returns imported_identity and ipskx.
func deriveJSON(t *testing.T, n *node, identity, ctxHex, proto, kdf string, responses *bytes.Buffer) (wire, ipskx string) {
	t.Helper()
	out, code := n.run(nil, "derive", "--identity", identity, "--context-hex", ctxHex, "--protocol", proto, "--kdf", kdf, "--json")
	if code != 0 {
		t.Fatalf("derive %s %s/%s: exit %d: %s", identity, proto, kdf, code, out)
	}
	responses.WriteString(out)
	var r struct {
		ImportedIdentity string `json:"imported_identity"`
		IPSKX            string `json:"ipskx"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("derive --json output is not JSON: %v", err)
	}
	return r.ImportedIdentity, r.IPSKX
}

// provisioned is a PSK a test put into a vault, with the EPSK it came from.
type provisioned struct {
	identity string
	hash     importer.Hash
	epsk     []byte
}

// checkDerivations derives every PSK for several targets through n's
// daemon and compares each answer with the in-memory importer, byte for
// byte; failures name the PSK and target, never the values.
func checkDerivations(t *testing.T, n *node, psks []provisioned, stage string, responses *bytes.Buffer) {
	t.Helper()
	for _, p := range psks {
		for _, c := range []struct{ proto, kdf string }{{"tls1.3", "sha256"}, {"tls1.3", "sha384"}, {"dtls1.3", "sha384"}} {
			wire, ipskx := deriveJSON(t, n, p.identity, "c0ffee", c.proto, c.kdf, responses)
			pr, _ := importer.ParseProtocol(c.proto)
			k, _ := importer.ParseKDF(c.kdf)
			w, want, err := importer.Import(p.hash, p.epsk, importer.Identity{External: []byte(p.identity), Context: []byte{0xc0, 0xff, 0xee}, Protocol: pr, KDF: k})
			if err != nil {
				t.Fatal(err)
			}
			if wire != hex.EncodeToString(w) || ipskx != hex.EncodeToString(want) {
				t.Errorf("%s: %s %s/%s differs from the importer (values withheld)", stage, p.identity, c.proto, c.kdf)
			}
		}
	}
}

// assertNowhere fails for each secret found in one of the haystacks (the
// daemon log, the responses) or in any file under dirs; the failure names
// the secret and the place, never the value.
func assertNowhere(t *testing.T, secrets, haystacks map[string][]byte, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := os.ReadFile(p)
				haystacks[p] = b
			}
			return nil
		})
	}
	for hn, h := range haystacks {
		for sn, s := range secrets {
			if bytes.Contains(h, s) {
				t.Errorf("%s contains the %s", hn, sn)
			}
		}
	}
}

// importPSK imports p (node-a to node-b) into n's vault through the CLI;
// keyArgs name the key (--key-file FILE, or --wrapped BLOB and its flags)
// and add any other flags. The answer joins responses.
func importPSK(t *testing.T, n *node, responses *bytes.Buffer, p provisioned, keyArgs ...string) provisioned {
	t.Helper()
	args := append([]string{"psk", "import", "--identity", p.identity, "--hash", p.hash.String(), "--client", "node-a", "--server", "node-b"}, keyArgs...)
	out, code := n.run(nil, args...)
	if code != 0 {
		t.Fatalf("import %s: exit %d: %s", p.identity, code, out)
	}
	responses.WriteString(out)
	return p
}

// createPSK has n's daemon generate a PSK (this node is the server of it)
// and returns the EPSK it wrote for the peer.
func createPSK(t *testing.T, n *node, identity string, responses *bytes.Buffer) []byte {
	t.Helper()
	created := filepath.Join(t.TempDir(), "created.hex")
	out, code := n.run(nil, "psk", "create", "--identity", identity, "--client", "node-b", "--server", "node-a", "--format", "hex", "--out", created)
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, out)
	}
	responses.WriteString(out)
	hexKey, err := os.ReadFile(created)
	if err != nil {
		t.Fatal(err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(hexKey)))
	if err != nil {
		t.Fatal(err)
	}
	return key
}
