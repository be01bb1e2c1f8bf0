package examples

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pskvault/pskvault/client"
)

// The OpenSSL and GnuTLS command-line tools take the PSK identity as a
// NUL-terminated string, and every serialized ImportedIdentity contains zero
// bytes (its length prefixes, target_kdf 0x0001). The tests therefore send
// the ImportedIdentity's lowercase hex as the PSK identity; a TLS stack using
// the library API sends the bytes themselves. Either way each side takes
// identity and key from its own daemon, and the key is the ipskx used as an
// ordinary external PSK ("ext binder").

// gnutlsPriority allows TLS 1.3 only, and only the PSK key exchanges with
// (EC)DHE: the client offers psk_dhe_ke and never psk_ke.
const gnutlsPriority = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+DHE-PSK:+ECDHE-PSK"

// TLS_AES_128_GCM_SHA256 matches an HKDF_SHA256 target KDF. OpenSSL offers
// psk_dhe_ke only unless -allow_no_dhe_kex is given.
const opensslSuite = "TLS_AES_128_GCM_SHA256"

// tlsServer is a running TLS server tool.
type tlsServer struct {
	p     *proc
	port  int
	reply func(msg string) string // what the server sends back for msg
}

// serverKey is what the server side took from its daemon; nil Key means the
// daemon gave it nothing, and the server runs without any PSK.
type serverKey struct {
	Identity string // PSK identity as sent on the wire (hex of ImportedIdentity)
	Key      []byte // ipskx
}

type tlsStack struct {
	name   string
	tools  []string
	server func(t *testing.T, k serverKey) *tlsServer
	client func(t *testing.T, port int, identity string, key []byte) *proc
}

var stacks = []tlsStack{
	{
		name:  "openssl",
		tools: []string{"openssl"},
		server: func(t *testing.T, k serverKey) *tlsServer {
			if k.Key == nil {
				// A server whose daemon gave it nothing still runs TLS 1.3
				// with PSKs, just not with this one.
				k = serverKey{Identity: "pskvault-no-key", Key: randBytes(t, 32)}
			}
			p, port := listenOnFreePort(t, "openssl s_server", "ACCEPT", func(port int) *proc {
				return spawn(t, 30*time.Second, "openssl", "s_server", "-nocert", "-tls1_3", "-ciphersuites", opensslSuite,
					"-accept", "127.0.0.1:"+strconv.Itoa(port), "-naccept", "1", "-rev",
					"-psk", hex.EncodeToString(k.Key), "-psk_identity", k.Identity)
			})
			return &tlsServer{p: p, port: port, reply: reverse}
		},
		client: func(t *testing.T, port int, identity string, key []byte) *proc {
			return spawn(t, 20*time.Second, "openssl", "s_client", "-connect", "127.0.0.1:"+strconv.Itoa(port),
				"-tls1_3", "-ciphersuites", opensslSuite, "-psk", hex.EncodeToString(key), "-psk_identity", identity,
				"-brief")
		},
	},
	{
		name:  "gnutls",
		tools: []string{"gnutls-serv", "gnutls-cli"},
		server: func(t *testing.T, k serverKey) *tlsServer {
			// gnutls-serv 3.7 has no option to bind to loopback only; it
			// listens on all addresses of a free port for a few seconds.
			pw := filepath.Join(t.TempDir(), "psk.passwd")
			var line string
			if k.Key != nil {
				line = k.Identity + ":" + hex.EncodeToString(k.Key) + "\n"
			}
			if err := os.WriteFile(pw, []byte(line), 0o600); err != nil {
				t.Fatal(err)
			}
			p, port := listenOnFreePort(t, "gnutls-serv", "listening on IPv4", func(port int) *proc {
				return spawn(t, 30*time.Second, "gnutls-serv", "--pskpasswd", pw, "--priority", gnutlsPriority,
					"-p", strconv.Itoa(port), "--echo")
			})
			return &tlsServer{p: p, port: port, reply: func(m string) string { return m }}
		},
		client: func(t *testing.T, port int, identity string, key []byte) *proc {
			return spawn(t, 20*time.Second, "gnutls-cli", "--pskusername", identity, "--pskkey", hex.EncodeToString(key),
				"--priority", gnutlsPriority, "-p", strconv.Itoa(port), "127.0.0.1")
		},
	},
}

func reverse(s string) string {
	r := []byte(s)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r)
}

// handshake runs one client against srv and reports whether application
// data crossed both ways. The client's output is returned for diagnosis; it
// never holds key bytes.
func handshake(t *testing.T, cs tlsStack, srv *tlsServer, identity string, key []byte) (ok bool, clientOut string) {
	t.Helper()
	msg := "ping-" + hex.EncodeToString(randBytes(t, 6))
	c := cs.client(t, srv.port, identity, key)
	c.stdin.Write([]byte(msg + "\n"))
	ok = c.waitFor(srv.reply(msg), 10*time.Second)
	c.stdin.Close()
	c.wait(5 * time.Second)
	return ok, c.out.String()
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// nodeContext binds the imported PSK to both endpoints (RFC 9258 Appendix A):
// each side builds it from the nodes it believes take part.
func nodeContext(clientNode, serverNode string) []byte {
	return []byte("pskvault:" + clientNode + ">" + serverNode)
}

// pair is a client vault (node-a) and a server vault (node-b) sharing one
// EPSK, created on the client and imported on the server.
type pair struct {
	a, b     *node
	identity []byte
	keyFile  string
}

func newPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{a: newNode(t, "node-a"), b: newNode(t, "node-b"), identity: []byte("tls-a-b")}
	p.keyFile = filepath.Join(t.TempDir(), "epsk.hex")
	p.a.cli(t, "psk", "create", "--identity", string(p.identity), "--client", "node-a", "--server", "node-b", "--format", "hex", "--out", p.keyFile)
	p.b.cli(t, "psk", "import", "--identity", string(p.identity), "--client", "node-a", "--server", "node-b", "--key-file", p.keyFile)
	return p
}

// serverSide is what a TLS server on node-b configures: the identity it
// expects and the key, both from its own daemon's data socket.
func (p *pair) serverSide(t *testing.T) (serverKey, error) {
	d, err := p.b.derive(p.identity, nodeContext("node-a", "node-b"))
	if err != nil {
		return serverKey{}, err
	}
	if d.Response.Role != "server" {
		t.Fatalf("node-b derived role %q, want server", d.Response.Role)
	}
	return serverKey{Identity: hex.EncodeToString(d.ImportedIdentity), Key: d.IPSKX}, nil
}

func clientSide(t *testing.T, n *node, identity, ctx []byte) (string, []byte) {
	t.Helper()
	d, err := n.derive(identity, ctx)
	if err != nil {
		t.Fatalf("%s derive: %v", n.id, err)
	}
	if d.Response.Role != "client" {
		t.Fatalf("%s derived role %q, want client", n.id, d.Response.Role)
	}
	return hex.EncodeToString(d.ImportedIdentity), d.IPSKX
}

func requireStacks(t *testing.T, ss ...tlsStack) {
	for _, s := range ss {
		for _, tool := range s.tools {
			requireTool(t, tool)
		}
	}
}

// TestTLS13Handshake: both vaults derive from the same EPSK; every client
// stack completes a TLS 1.3 psk_dhe_ke handshake with every server stack and
// application data crosses.
func TestTLS13Handshake(t *testing.T) {
	requireStacks(t, stacks...)
	p := newPair(t)
	sk, err := p.serverSide(t)
	if err != nil {
		t.Fatalf("node-b derive: %v", err)
	}
	id, key := clientSide(t, p.a, p.identity, nodeContext("node-a", "node-b"))
	if id != sk.Identity {
		t.Fatalf("client and server imported identities differ: %s vs %s", id, sk.Identity)
	}
	for _, ss := range stacks {
		for _, cs := range stacks {
			t.Run(cs.name+"-client/"+ss.name+"-server", func(t *testing.T) {
				srv := ss.server(t, sk)
				ok, out := handshake(t, cs, srv, id, key)
				if !ok {
					t.Fatalf("no application data crossed\nclient:\n%s\nserver:\n%s", out, srv.p.out.String())
				}
				if cs.name == "openssl" && !strings.Contains(out, "Server Temp Key") {
					t.Errorf("openssl client saw no (EC)DHE share: not psk_dhe_ke\n%s", out)
				}
				if cs.name == "gnutls" && !strings.Contains(out, "PSK authentication") {
					t.Errorf("gnutls client did not authenticate with the PSK\n%s", out)
				}
			})
		}
	}
}

// TestTLS13HandshakeFails: the handshake must fail, and fail for the reason
// named, when the context differs, when the server's PSK is gone, and when
// the client's vault belongs to another node.
func TestTLS13HandshakeFails(t *testing.T) {
	requireStacks(t, stacks...)
	p := newPair(t)
	sk, err := p.serverSide(t)
	if err != nil {
		t.Fatalf("node-b derive: %v", err)
	}

	// The client believes it talks to another server: its context differs,
	// so its imported identity and key differ, and the server does not know
	// the identity. OpenSSL's server then falls back to certificates it does
	// not have; GnuTLS's rejects the ClientHello.
	t.Run("context-differs", func(t *testing.T) {
		id, key := clientSide(t, p.a, p.identity, nodeContext("node-a", "node-x"))
		if id == sk.Identity {
			t.Fatal("a different context gave the same imported identity")
		}
		if hex.EncodeToString(key) == hex.EncodeToString(sk.Key) {
			t.Fatal("a different context gave the same ipskx")
		}
		expectFail(t, sk, id, key, map[string]string{"openssl": "no suitable signature algorithm", "gnutls": "illegal parameter"})
		// Even with the server's identity string, the key is wrong: the
		// binder does not verify.
		expectFail(t, sk, sk.Identity, key, map[string]string{"openssl": "binder does not verify", "gnutls": "illegal parameter"})
	})

	// The server's vault has lost the PSK: its daemon gives it nothing, so
	// the server runs without the PSK, while the client still offers it.
	t.Run("server-psk-revoked", func(t *testing.T) {
		id, key := clientSide(t, p.a, p.identity, nodeContext("node-a", "node-b"))
		removePSK(t, p.b, p.identity)
		_, err := p.serverSide(t)
		var ce *client.Error
		if !errors.As(err, &ce) || (ce.Code != "not_found" && ce.Code != "revoked") {
			t.Fatalf("node-b derive after removal: got %v, want not_found or revoked", err)
		}
		expectFail(t, serverKey{}, id, key, map[string]string{"openssl": "no suitable signature algorithm", "gnutls": "illegal parameter"})
	})

	// A vault for node-c holds the same EPSK (leaked or mis-provisioned). It
	// cannot take the PSK as node-a's, and bound to its own node id the
	// context differs from the one the server expects.
	t.Run("client-vault-for-another-node", func(t *testing.T) {
		c := newNode(t, "node-c")
		_, errOut, err := c.run(nil, "psk", "import", "--identity", string(p.identity), "--client", "node-a", "--server", "node-b", "--key-file", p.keyFile)
		if err == nil || !strings.Contains(errOut, "not party") {
			t.Fatalf("node-c imported a PSK between node-a and node-b: err=%v %s", err, errOut)
		}
		c.cli(t, "psk", "import", "--identity", string(p.identity), "--client", "node-c", "--server", "node-b", "--key-file", p.keyFile)
		id, key := clientSide(t, c, p.identity, nodeContext("node-c", "node-b"))
		if _, err := c.derive(p.identity, nodeContext("node-a", "node-b")); err != nil {
			t.Logf("node-c derive with node-a's context: %v", err)
		}
		expectFail(t, sk, id, key, map[string]string{"openssl": "no suitable signature algorithm", "gnutls": "illegal parameter"})
	})
}

// The client's own vault revoked the PSK: its daemon gives it nothing to
// offer.
func TestTLS13ClientRevoked(t *testing.T) {
	p := newPair(t)
	if _, err := p.a.derive(p.identity, nodeContext("node-a", "node-b")); err != nil {
		t.Fatal(err)
	}
	removePSK(t, p.a, p.identity)
	_, err := p.a.derive(p.identity, nodeContext("node-a", "node-b"))
	var ce *client.Error
	if !errors.As(err, &ce) || (ce.Code != "revoked" && ce.Code != "not_found") {
		t.Fatalf("node-a derive after revocation: got %v, want revoked", err)
	}
	ca := client.New(p.a.data)
	defer ca.Close()
	c, cancel := context2()
	defer cancel()
	if offers, err := ca.Offers(c, "node-b", nodeContext("node-a", "node-b"), "tls1.3", "sha256"); err != nil || len(offers) != 0 {
		t.Fatalf("offers after revocation: %d, %v", len(offers), err)
	}
}

// expectFail runs every client stack against every server stack and wants
// each handshake to fail with the server reporting reason[server stack].
func expectFail(t *testing.T, sk serverKey, id string, key []byte, reason map[string]string) {
	t.Helper()
	for _, ss := range stacks {
		for _, cs := range stacks {
			srv := ss.server(t, sk)
			ok, out := handshake(t, cs, srv, id, key)
			if ok {
				t.Errorf("%s client -> %s server: application data crossed, want a failed handshake", cs.name, ss.name)
				continue
			}
			want := reason[ss.name]
			for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && !strings.Contains(strings.ToLower(srv.p.out.String()), want); {
				time.Sleep(20 * time.Millisecond)
			}
			if !strings.Contains(strings.ToLower(srv.p.out.String()), want) {
				t.Errorf("%s client -> %s server: server did not fail with %q\nserver:\n%s\nclient:\n%s", cs.name, ss.name, want, srv.p.out.String(), out)
			}
		}
	}
}

// removePSK revokes the PSK when the daemon supports it, or deletes it.
func removePSK(t *testing.T, n *node, identity []byte) {
	t.Helper()
	if _, _, err := n.run(nil, "psk", "revoke", "--identity", string(identity)); err == nil {
		return
	}
	n.cli(t, "psk", "delete", "--identity", string(identity))
}

// TestExampleScript runs examples/tls13-handshake.sh as a user would.
func TestExampleScript(t *testing.T) {
	requireStacks(t, stacks...)
	p := spawn(t, 2*time.Minute, "bash", mustAbs(t, "tls13-handshake.sh"), pskvaultBin)
	if err := p.wait(2 * time.Minute); err != nil {
		t.Fatalf("tls13-handshake.sh: %v\n%s", err, p.out.String())
	}
	if !strings.Contains(p.out.String(), "handshake refused, as it must be") {
		t.Fatalf("script did not finish:\n%s", p.out.String())
	}
}

func mustAbs(t *testing.T, name string) string {
	p, err := filepath.Abs(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
