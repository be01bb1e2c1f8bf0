package examples

// End-to-end tests of the C client library (clients/c): the library and its
// example programs are built with gcc against the system's libssl-dev and
// libgnutls28-dev (with AddressSanitizer and UndefinedBehaviorSanitizer),
// two real daemons run (client node node-a, server node node-b), and real
// TLS 1.3 handshakes cross between the OpenSSL and GnuTLS examples.

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/internal/swtpmsim"
)

// cDir is clients/c, from this package's directory.
func cDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "clients", "c")
}

var (
	clibOnce  sync.Map // build flavour -> *clibBuild
	clibMutex sync.Mutex
)

type clibBuild struct {
	dir string
	err error
}

// buildCLib builds clients/c once per test binary into a temporary
// directory: sanitized (tests) or optimised (benchmarks).
func buildCLib(tb testing.TB, sanitize bool) string {
	tb.Helper()
	for _, tool := range []string{"gcc", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
				tb.Fatalf("%s not installed and PSKVAULT_REQUIRE_SIMULATORS=1", tool)
			}
			tb.Skipf("%s not installed", tool)
		}
	}
	for _, h := range []string{"/usr/include/openssl/ssl.h", "/usr/include/gnutls/gnutls.h"} {
		if _, err := os.Stat(h); err != nil {
			if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
				tb.Fatalf("%s missing and PSKVAULT_REQUIRE_SIMULATORS=1 (./test.sh installs libssl-dev and libgnutls28-dev)", h)
			}
			tb.Skipf("%s missing", h)
		}
	}
	clibMutex.Lock()
	defer clibMutex.Unlock()
	key := fmt.Sprint(sanitize)
	if b, ok := clibOnce.Load(key); ok {
		cb := b.(*clibBuild)
		if cb.err != nil {
			tb.Fatal(cb.err)
		}
		return cb.dir
	}
	// under the pskvault binary's directory, which TestMain removes
	dir, err := os.MkdirTemp(filepath.Dir(pskvaultBin), "clib-")
	cb := &clibBuild{dir: dir, err: err}
	if err == nil {
		os.Chmod(dir, 0o755)
		args := []string{"-C", cDir(), "-s", "BUILD=" + dir, "all"}
		if sanitize {
			args = append(args, "SANITIZE=1")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out, err := exec.CommandContext(ctx, "make", args...).CombinedOutput()
		cancel()
		if err != nil {
			cb.err = fmt.Errorf("make %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	clibOnce.Store(key, cb)
	if cb.err != nil {
		tb.Fatal(cb.err)
	}
	return cb.dir
}

// cServer starts a C example server on a free port for node n; it returns
// the process and its address.
func cServer(t testing.TB, bin string, n *node, extra ...string) (*proc, string) {
	t.Helper()
	var addr string
	p, _ := listenOnFreePort(t, filepath.Base(bin), "listening", func(port int) *proc {
		addr = fmt.Sprintf("127.0.0.1:%d", port)
		return spawn(t, 10*time.Minute, bin, append([]string{"--socket", n.data, "--listen", addr}, extra...)...)
	})
	return p, addr
}

// cClient runs a C example client once and returns its output and error.
func cClient(t *testing.T, bin string, n *node, addr, peer string, extra ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--socket", n.data, "--connect", addr, "--peer", peer}, extra...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// rawClient runs the policy-free test client with identity and key on
// stdin and a GnuTLS priority string.
func rawClient(t *testing.T, dir, addr, priority string, wire, key []byte) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "raw_psk_client"), "--connect", addr, "--priority", priority)
	cmd.Stdin = strings.NewReader(hex.EncodeToString(wire) + " " + hex.EncodeToString(key) + "\n")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitLine waits for a server's output to contain want.
func waitLine(t testing.TB, p *proc, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("server output lacks %q:\n%s", want, p.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wireOf(t testing.TB, external []byte) []byte {
	w, err := importer.Identity{External: external, Protocol: importer.TLS13, KDF: importer.HKDFSHA256}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestCLibHandshakes: OpenSSL<->OpenSSL, GnuTLS<->GnuTLS and both cross
// pairings complete TLS 1.3 psk_dhe_ke handshakes fed by the daemons, data
// crosses, and the server receives exactly the ImportedIdentity bytes; a
// TLS 1.2 client and a psk_ke-only client are refused; a rotation is
// picked up without restarting anything, and after psk revoke on the
// server node the next handshake fails while the servers keep running.
func TestCLibHandshakes(t *testing.T) {
	dir := buildCLib(t, true)
	openssl := requireTool(t, "openssl")
	p := newPair(t)
	wire := wireOf(t, p.identity)
	wireHex := hex.EncodeToString(wire)

	servers := map[string]string{"openssl": filepath.Join(dir, "ossl_echo_server"), "gnutls": filepath.Join(dir, "gnutls_echo_server")}
	clients := map[string]string{"openssl": filepath.Join(dir, "ossl_echo_client"), "gnutls": filepath.Join(dir, "gnutls_echo_client")}
	procs, addrs := map[string]*proc{}, map[string]string{}
	for name, bin := range servers {
		procs[name], addrs[name] = cServer(t, bin, p.b)
	}

	handshake := func(srv, cli, wantHex string, wantGen int) {
		t.Helper()
		before := strings.Count(procs[srv].out.String(), "lookup identity="+wantHex+" status=ok generation="+fmt.Sprint(wantGen))
		msg := "ping " + srv + " from " + cli
		out, err := cClient(t, clients[cli], p.a, addrs[srv], "node-b", "--message", msg)
		if err != nil || !strings.Contains(out, "echo: "+msg) {
			t.Fatalf("%s client -> %s server: %v\n%s\nserver:\n%s", cli, srv, err, out, procs[srv].out.String())
		}
		if !strings.Contains(out, "offer identity="+wantHex+" status=ok generation="+fmt.Sprint(wantGen)) {
			t.Errorf("%s client offered something else than %s:\n%s", cli, wantHex, out)
		}
		// the server logs the PskIdentity bytes it received, in hex
		waitLine(t, procs[srv], "lookup identity="+wantHex+" status=ok generation="+fmt.Sprint(wantGen))
		if after := strings.Count(procs[srv].out.String(), "lookup identity="+wantHex+" status=ok generation="+fmt.Sprint(wantGen)); after != before+1 {
			t.Errorf("%s server: %d lookups of %s, want %d", srv, after, wantHex, before+1)
		}
	}
	for _, srv := range []string{"openssl", "gnutls"} {
		for _, cli := range []string{"openssl", "gnutls"} {
			handshake(srv, cli, wireHex, 1)
		}
	}
	if !strings.Contains(procs["openssl"].out.String(), "handshake ok version=TLSv1.3") || !strings.Contains(procs["gnutls"].out.String(), "handshake ok (TLS1.3)") {
		t.Fatalf("servers did not report TLS 1.3:\n%s\n%s", procs["openssl"].out, procs["gnutls"].out)
	}

	// The right identity bytes and key, but what the policy forbids.
	_, key := clientSide(t, p.a, p.identity, nil)
	defer clear(key)
	if out, err := rawClient(t, dir, addrs["openssl"], "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-PSK", wire, key); err != nil {
		t.Fatalf("control: a psk_dhe_ke client with the same key failed: %v\n%s", err, out)
	}
	for name, addr := range addrs {
		for _, c := range []struct{ what, priority string }{
			{"psk_ke only", "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+PSK"},
			{"TLS 1.2 PSK", "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+PSK:+ECDHE-PSK:+DHE-PSK"},
		} {
			if out, err := rawClient(t, dir, addr, c.priority, wire, key); err == nil || strings.Contains(out, "handshake ok") {
				t.Errorf("%s server accepted a %s client:\n%s", name, c.what, out)
			}
		}
		// openssl s_client -tls1_2 with a PSK suite
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", addr, "-tls1_2", "-cipher", "PSK-AES128-GCM-SHA256:ECDHE-PSK-AES128-CBC-SHA256", "-psk_identity", wireHex, "-psk", hex.EncodeToString(key), "-brief")
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.CombinedOutput()
		cancel()
		if strings.Contains(string(out), "CONNECTION ESTABLISHED") {
			t.Errorf("%s server accepted openssl s_client -tls1_2:\n%s", name, out)
		}
	}
	waitLine(t, procs["openssl"], "handshake failed: unsupported protocol")

	// Rotation: the new generation, on both nodes, is used from the next
	// handshake on; nothing restarts.
	next := filepath.Join(t.TempDir(), "next.bundle")
	p.a.cli(t, "psk", "rotate", "--identity", string(p.identity), "--new-identity", "tls-a-b-g2", "--overlap", "1h", "--out", next)
	p.b.cli(t, "psk", "import", "--bundle", next) // the rotation bundle carries the new identity and the overlap
	wire2Hex := hex.EncodeToString(wireOf(t, []byte("tls-a-b-g2")))
	for _, srv := range []string{"openssl", "gnutls"} {
		for _, cli := range []string{"openssl", "gnutls"} {
			handshake(srv, cli, wire2Hex, 2)
		}
	}

	// Revocation on the server node: the next handshake fails, the servers
	// keep running and keep asking.
	p.b.cli(t, "psk", "revoke", "--identity", "tls-a-b-g2")
	for _, srv := range []string{"openssl", "gnutls"} {
		for _, cli := range []string{"openssl", "gnutls"} {
			n := strings.Count(procs[srv].out.String(), "lookup identity="+wire2Hex+" status=no key")
			out, err := cClient(t, clients[cli], p.a, addrs[srv], "node-b")
			if err == nil || strings.Contains(out, "echo:") {
				t.Fatalf("%s client -> %s server after revoke: handshake completed:\n%s", cli, srv, out)
			}
			waitLine(t, procs[srv], "lookup identity="+wire2Hex+" status=no key")
			if m := strings.Count(procs[srv].out.String(), "lookup identity="+wire2Hex+" status=no key"); m != n+1 {
				t.Errorf("%s server: %d refused lookups after revoke, want %d", srv, m, n+1)
			}
			select {
			case <-procs[srv].done:
				t.Fatalf("%s server exited after a refused handshake:\n%s", srv, procs[srv].out.String())
			default:
			}
		}
	}
	// The servers never print key bytes.
	for name, pr := range procs {
		if strings.Contains(pr.out.String(), hex.EncodeToString(key)) {
			t.Errorf("%s server output holds a key", name)
		}
	}
}

// TestCLibHardwareBackends: the C examples against a server node whose key
// lives in a TPM (swtpm) and in a PKCS#11 token (SoftHSM2).
func TestCLibHardwareBackends(t *testing.T) {
	dir := buildCLib(t, true)
	for _, backend := range []string{"tpm", "pkcs11"} {
		t.Run(backend, func(t *testing.T) {
			var uri string
			switch backend {
			case "tpm":
				uri = swtpmsim.Start(t).URI()
			case "pkcs11":
				uri = pkcs11test.Require(t, "pskvault-clib").URI()
			}
			a := newNode(t, "node-a")
			b := newNodeOn(t, "node-b", uri)
			bun := filepath.Join(t.TempDir(), "node-b.bundle")
			a.cli(t, "psk", "create", "--identity", "hw-link", "--client", "node-a", "--server", "node-b", "--out", bun)
			b.cli(t, "psk", "import", "--bundle", bun)
			wireHex := hex.EncodeToString(wireOf(t, []byte("hw-link")))
			for _, pair := range [][2]string{{"ossl_echo_server", "ossl_echo_client"}, {"gnutls_echo_server", "gnutls_echo_client"}} {
				srv, addr := cServer(t, filepath.Join(dir, pair[0]), b)
				out, err := cClient(t, filepath.Join(dir, pair[1]), a, addr, "node-b")
				if err != nil || !strings.Contains(out, "echo: hello through pskvault") {
					t.Fatalf("%s -> %s on %s: %v\n%s\nserver:\n%s", pair[1], pair[0], backend, err, out, srv.out.String())
				}
				waitLine(t, srv, "lookup identity="+wireHex+" status=ok")
			}
		})
	}
}

// newNodeOn is newNode with a backend URI.
func newNodeOn(t testing.TB, id, backend string) *node {
	t.Helper()
	base := tempDir(t)
	n := &node{
		t:        t,
		id:       id,
		stateDir: filepath.Join(base, "state"),
		socket:   filepath.Join(base, "admin", "pskvault.sock"),
		data:     filepath.Join(base, "data", "pskvault.sock"),
	}
	n.cli(t, "init", "--node-id", id, "--backend", backend)
	n.start()
	return n
}

// TestCLibEarlyData: 0-RTT data is accepted by the vault-fed OpenSSL server
// only under a PSK whose record allows early data; under one that does not,
// a client that sends early data anyway (its own key in memory, session
// allowing 0-RTT) has it rejected, and the vault-fed client does not send
// it at all.
func TestCLibEarlyData(t *testing.T) {
	dir := buildCLib(t, true)
	for _, allowed := range []bool{false, true} {
		t.Run(fmt.Sprintf("allowed=%v", allowed), func(t *testing.T) {
			a, b := newNode(t, "node-a"), newNode(t, "node-b")
			keyFile := filepath.Join(t.TempDir(), "epsk.hex")
			args := []string{"--identity", "ed-link", "--client", "node-a", "--server", "node-b"}
			if allowed {
				args = append(args, "--allow-early-data")
			}
			a.cli(t, append(append([]string{"psk", "create"}, args...), "--out", keyFile)...)
			b.cli(t, "psk", "import", "--bundle", keyFile) // the bundle carries the identity, nodes and policy
			srv, addr := cServer(t, filepath.Join(dir, "ossl_echo_server"), b, "--early-data")

			out, err := cClient(t, filepath.Join(dir, "ossl_echo_client"), a, addr, "node-b", "--early-data", "zero-rtt-from-vault-client")
			if err != nil || !strings.Contains(out, "echo: ") {
				t.Fatalf("vault-fed client: %v\n%s\nserver:\n%s", err, out, srv.out.String())
			}
			if allowed {
				if !strings.Contains(out, "early data sent") {
					t.Errorf("vault-fed client did not send early data under a PSK that allows it:\n%s", out)
				}
				waitLine(t, srv, "early data accepted: zero-rtt-from-vault-client")
			} else {
				if !strings.Contains(out, "early data not sent") {
					t.Errorf("vault-fed client sent early data under a PSK that forbids it:\n%s", out)
				}
			}

			// A client that sends early data whatever the record says.
			_, key := clientSide(t, a, []byte("ed-link"), nil)
			wire := wireOf(t, []byte("ed-link"))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(dir, "ossl_echo_client"), "--memory-key", "--connect", addr, "--early-data", "zero-rtt-regardless")
			cmd.Stdin = strings.NewReader(hex.EncodeToString(wire) + " " + hex.EncodeToString(key) + "\n")
			clear(key)
			mout, err := cmd.CombinedOutput()
			if !strings.Contains(string(mout), "early data sent") {
				t.Fatalf("memory-key client did not send early data: %v\n%s", err, mout)
			}
			if allowed {
				if err != nil {
					t.Fatalf("memory-key client: %v\n%s\nserver:\n%s", err, mout, srv.out.String())
				}
				waitLine(t, srv, "early data accepted: zero-rtt-regardless")
			} else {
				// OpenSSL aborts a handshake whose PSK session allows no early
				// data when the client sends some (too much early data); either
				// way the data must never be taken.
				waitLine(t, srv, "handshake failed: too much early data")
				if strings.Contains(srv.out.String(), "accepted") || strings.Contains(srv.out.String(), "zero-rtt") {
					t.Fatalf("the server took early data under a PSK that forbids it:\n%s", srv.out.String())
				}
			}
		})
	}
}
