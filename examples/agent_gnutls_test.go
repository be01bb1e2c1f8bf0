package examples

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAgentGnuTLSPasswordFile: gnutls-serv reads the password file the
// agent writes. GnuTLS (3.7.9 here) takes a username written as #HEX as
// those bytes: a line #616263 authenticates a client sending "abc", and
// a client sending the text "#616263" is refused. The agent's default
// form for GnuTLS is #HEX of the ImportedIdentity, so a GnuTLS server
// compares the raw RFC 9258 bytes; gnutls-cli cannot send those (it takes
// a C string and every ImportedIdentity holds zero bytes): a client needs
// the library API (gnutls_psk_set_client_credentials2, the C library).
// With identity_form hex-text the agent writes the hex as the username,
// which gnutls-cli sends: that handshake is run here through the agent's
// file.
func TestAgentGnuTLSPasswordFile(t *testing.T) {
	requireTool(t, "gnutls-serv")
	requireTool(t, "gnutls-cli")
	dir := tempDir(t)
	serve := func(pw string) *tlsServer {
		p, port := listenOnFreePort(t, "gnutls-serv", "listening on IPv4", func(port int) *proc {
			return spawn(t, 60*time.Second, "gnutls-serv", "--pskpasswd", pw, "--priority", gnutlsPriority, "-p", strconv.Itoa(port), "--echo")
		})
		return &tlsServer{p: p, port: port, reply: func(m string) string { return m }}
	}
	gnutls := stacks[1]

	// GnuTLS's own #HEX usernames.
	key := randBytes(t, 32)
	pw := filepath.Join(dir, "hex.passwd")
	os.WriteFile(pw, []byte("#616263:"+hex.EncodeToString(key)+"\n"), 0o600)
	srv := serve(pw)
	if ok, out := handshake(t, gnutls, srv, "abc", key); !ok {
		t.Fatalf("#616263 did not authenticate username abc:\n%s", out)
	}
	if ok, _ := handshake(t, gnutls, srv, "#616263", key); ok {
		t.Fatal("the text #616263 authenticated: the line was not read as hex")
	}

	// The agent's files, from node-b's daemon (the server of the pair).
	p := newPair(t)
	bytesFile, textFile := filepath.Join(dir, "bytes.passwd"), filepath.Join(dir, "text.passwd")
	for _, c := range []struct{ path, form string }{{bytesFile, ""}, {textFile, "hex-text"}} {
		cfg := filepath.Join(dir, filepath.Base(c.path)+".json")
		out := map[string]any{"path": c.path, "format": "gnutls", "role": "server"}
		if c.form != "" {
			out["identity_form"] = c.form
		}
		writeAgentConfig(t, cfg, p.b, out)
		if _, e, err := p.b.run(nil, "agent", "--config", cfg, "--once"); err != nil {
			t.Fatalf("agent --once: %v: %s", err, e)
		}
	}
	id, ipskx := clientSide(t, p.a, p.identity, nil)
	b, _ := os.ReadFile(bytesFile)
	if !strings.HasPrefix(string(b), "#"+id+":") || strings.Count(string(b), "\n") != 1 {
		t.Fatalf("bytes form: want one line #%s:KEY, got %d lines", id, strings.Count(string(b), "\n"))
	}
	b, _ = os.ReadFile(textFile)
	if !strings.HasPrefix(string(b), id+":") {
		t.Fatal("hex-text form: the line does not start with the ImportedIdentity's hex")
	}
	if ok, out := handshake(t, gnutls, serve(textFile), id, ipskx); !ok {
		t.Fatalf("gnutls-cli with node-a's key against the agent's hex-text file:\n%s", out)
	}
	// Against the bytes file the hex text is not the username.
	if ok, _ := handshake(t, gnutls, serve(bytesFile), id, ipskx); ok {
		t.Fatal("the hex text authenticated against a #HEX (bytes) line")
	}
}
