package examples

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDeriveFormatOpenSSL: an openssl s_server started with exactly the
// line `derive --format openssl` prints (plus -nocert and its address)
// completes a TLS 1.3 handshake with an s_client started with node-a's
// line, and refuses a TLS 1.2 PSK cipher suite and a psk_ke-only client
// with the same identity and key.
func TestDeriveFormatOpenSSL(t *testing.T) {
	requireTool(t, "openssl")
	requireTool(t, "gnutls-cli")
	p := newPair(t)
	line := func(n *node) []string {
		out := n.cli(t, "derive", "--identity", string(p.identity), "--format", "openssl")
		f := strings.Fields(out)
		if len(f) == 0 || strings.Count(out, "\n") != 1 {
			t.Fatalf("%s: --format openssl printed %d lines", n.id, strings.Count(out, "\n"))
		}
		return f
	}
	srvArgs, cliArgs := line(p.b), line(p.a)
	arg := func(args []string, name string) string {
		for i, a := range args {
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
		}
		t.Fatalf("the printed line has no %s", name)
		return ""
	}
	id, key := arg(cliArgs, "-psk_identity"), arg(cliArgs, "-psk")
	srv, port := listenOnFreePort(t, "openssl s_server", "ACCEPT", func(port int) *proc {
		args := append([]string{"s_server", "-nocert", "-accept", "127.0.0.1:" + strconv.Itoa(port), "-rev"}, srvArgs...)
		return spawn(t, 60*time.Second, "openssl", args...)
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	try := func(name string, c *proc) bool {
		t.Helper()
		msg := "ping-" + name
		c.stdin.Write([]byte(msg + "\n"))
		ok := c.waitFor(reverse(msg), 5*time.Second)
		c.stdin.Close()
		c.wait(5 * time.Second)
		return ok
	}
	if !try("tls13", spawn(t, 20*time.Second, "openssl", append([]string{"s_client", "-connect", addr, "-brief"}, cliArgs...)...)) {
		t.Fatalf("TLS 1.3 with the printed lines failed\nserver:\n%s", srv.out.String())
	}
	if try("tls12", spawn(t, 20*time.Second, "openssl", "s_client", "-connect", addr, "-brief", "-tls1_2", "-cipher", "PSK-AES128-GCM-SHA256", "-psk", key, "-psk_identity", id)) {
		t.Fatal("the printed s_server line accepted TLS 1.2 with PSK-AES128-GCM-SHA256")
	}
	// gnutls-cli with only the PSK key exchange (psk_ke, no (EC)DHE).
	if try("pskke", spawn(t, 20*time.Second, "gnutls-cli", "--pskusername", id, "--pskkey", key,
		"--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+PSK", "-p", strconv.Itoa(port), "127.0.0.1")) {
		t.Fatal("the printed s_server line accepted a psk_ke-only client")
	}
	if !strings.Contains(srv.out.String(), "unsupported protocol") {
		t.Errorf("s_server did not refuse TLS 1.2 as an unsupported protocol:\n%s", srv.out.String())
	}
}
