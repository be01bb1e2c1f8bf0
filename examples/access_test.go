package examples

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/importer"
)

// Callers other than root, run as child processes with their own uid.
var (
	allowedUser = &syscall.Credential{Uid: 65534, Gid: 65534}        // nobody: in the access list
	otherUser   = &syscall.Credential{Uid: 65533, Gid: 65534}        // not in it
	adminUser   = &syscall.Credential{Uid: 65532, Gid: adminGroupID} // in the admin group
)

const adminGroupID = 65530

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run callers under other uids")
	}
}

func auditLines(t *testing.T, n *node) []api.AuditEntry {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(n.stateDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	var out []api.AuditEntry
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		var e api.AuditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line is not JSON: %v", err)
		}
		out = append(out, e)
	}
	return out
}

// TestAccessControl runs the daemon as root and calls it as other users:
// an allowed user derives, another user is refused with exactly the answer
// for an unknown PSK and an audit line records it, a non-admin cannot reach
// the admin socket (filesystem first, daemon second), an admin-group member
// and root can.
func TestAccessControl(t *testing.T) {
	requireRoot(t)
	a := newNode(t, "node-a", "--allow-client", "user:65534", "--admin-group", "65530")
	keyFile := filepath.Join(t.TempDir(), "epsk.hex")
	a.cli(t, "psk", "create", "--identity", "web-1", "--client", "node-a", "--server", "node-b", "--format", "hex", "--out", keyFile)
	epsk, _ := os.ReadFile(keyFile)
	var outputs []string

	derive := func(cred *syscall.Credential, identity string) (string, string, error) {
		o, e, err := a.run(cred, "derive", "--identity", identity, "--context-hex", "0102", "--json")
		outputs = append(outputs, o, e)
		return o, e, err
	}

	t.Run("allowed-user-derives", func(t *testing.T) {
		o, e, err := derive(allowedUser, "web-1")
		if err != nil {
			t.Fatalf("uid 65534 derive: %v: %s", err, e)
		}
		var r api.DeriveResponse
		if err := json.Unmarshal([]byte(o), &r); err != nil || r.Role != "client" || len(r.IPSKX) != 64 {
			t.Fatalf("uid 65534 derive: bad answer (role %q, %d hex digits of key)", r.Role, len(r.IPSKX))
		}
	})

	t.Run("other-user-refused-like-unknown", func(t *testing.T) {
		_, denied, err1 := derive(otherUser, "web-1")
		_, unknown, err2 := derive(otherUser, "no-such-psk")
		if err1 == nil || err2 == nil {
			t.Fatalf("uid 65533 derived: err=%v / %v", err1, err2)
		}
		if denied != unknown {
			t.Fatalf("denied and unknown answers differ:\n%s\n%s", denied, unknown)
		}
		// The same holds on the wire, byte for byte, status included.
		_, errDenied := rawDerive(t, a, otherUser, "web-1")
		_, errUnknown := rawDerive(t, a, otherUser, "no-such-psk")
		if errDenied != errUnknown {
			t.Fatalf("wire answers differ: %q vs %q", errDenied, errUnknown)
		}
		var found bool
		for _, e := range auditLines(t, a) {
			if e.Op == "derive" && e.Result == "denied" && e.UID != nil && *e.UID == 65533 && e.Identity == hex.EncodeToString([]byte("web-1")) {
				found = e.PID != nil && *e.PID > 0 && e.Target == "tls1.3/sha256"
			}
		}
		if !found {
			t.Fatal("no audit line with result denied for uid 65533")
		}
	})

	t.Run("non-admin-cannot-reach-admin-socket", func(t *testing.T) {
		_, e, err := a.run(allowedUser, "psk", "list")
		outputs = append(outputs, e)
		if err == nil {
			t.Fatal("uid 65534 listed PSKs on the admin socket")
		}
		if !strings.Contains(e, "permission denied") {
			t.Fatalf("want the filesystem to refuse the connection, got: %s", e)
		}
		// Open the directory and socket up: the daemon refuses by itself.
		os.Chmod(filepath.Dir(a.socket), 0o755)
		os.Chmod(a.socket, 0o666)
		defer os.Chmod(filepath.Dir(a.socket), 0o750)
		defer os.Chmod(a.socket, 0o660)
		_, e, err = a.run(allowedUser, "psk", "list")
		outputs = append(outputs, e)
		if err == nil || !strings.Contains(e, "admin socket is for root") {
			t.Fatalf("daemon let uid 65534 use the admin socket: err=%v %s", err, e)
		}
		var found bool
		for _, l := range auditLines(t, a) {
			found = found || (l.Socket == "admin" && l.Result == "forbidden" && l.UID != nil && *l.UID == 65534)
		}
		if !found {
			t.Fatal("no audit line for the refused admin call")
		}
	})

	t.Run("admin-group-and-root-can", func(t *testing.T) {
		o, e, err := a.run(adminUser, "psk", "list")
		outputs = append(outputs, o, e)
		if err != nil || !strings.Contains(o, "web-1") {
			t.Fatalf("admin group member: err=%v %s", err, e)
		}
		o = a.cli(t, "psk", "list")
		outputs = append(outputs, o)
		if !strings.Contains(o, "web-1") {
			t.Fatalf("root: %s", o)
		}
		// The admin group may manage keys but is not in the access list.
		if _, _, err := derive(adminUser, "web-1"); err == nil {
			t.Fatal("admin group member derived without being in the access list")
		}
	})

	t.Run("no-key-bytes-anywhere", func(t *testing.T) {
		audit, _ := os.ReadFile(filepath.Join(a.stateDir, "audit.log"))
		key := strings.TrimSpace(string(epsk))
		raw, _ := hex.DecodeString(key)
		for i, s := range append(outputs, string(audit), a.stderr.String()) {
			if strings.Contains(strings.ToLower(s), key) || bytes.Contains([]byte(s), raw) {
				t.Errorf("output %d holds the EPSK", i)
			}
		}
	})
}

// rawDerive posts a derive request to the data socket with curl as cred
// and returns the HTTP status and body exactly as they came.
func rawDerive(t *testing.T, n *node, cred *syscall.Credential, identity string) (int, string) {
	t.Helper()
	curl := requireTool(t, "curl")
	ctx, cancel := context2()
	defer cancel()
	body := `{"identity":"` + identity + `","protocol":"tls1.3","kdf":"sha256"}`
	cmd := exec.CommandContext(ctx, curl, "-s", "--unix-socket", n.data, "-o", "-", "-w", " %{http_code}",
		"-H", "Content-Type: application/json", "-d", body, "http://pskvault/v1/derive")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	return 0, string(out)
}

// TestLookupAndOffers: the server side finds the key by the wire identity
// and checks it strictly; the client side lists what to offer a server.
// Both in JSON and in the binary form (docs/API.md), which must agree.
func TestLookupAndOffers(t *testing.T) {
	for _, bin := range []bool{false, true} {
		t.Run(map[bool]string{false: "json", true: "binary"}[bin], func(t *testing.T) { lookupAndOffers(t, bin) })
	}
}

func lookupAndOffers(t *testing.T, bin bool) {
	p := newPair(t)
	ctx := nodeContext("node-a", "node-b")
	id, key := clientSide(t, p.a, p.identity, ctx)
	wire := unhex(t, id)
	cb := client.New(p.b.data)
	defer cb.Close()
	cb.UseBinary(bin)
	c, cancel := context2()
	defer cancel()

	d, err := cb.Lookup(c, wire, ctx, "tls1.3", "sha256")
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if !bytes.Equal(d.IPSKX, key) || d.Response.Role != "server" {
		t.Fatal("lookup gave another key than the client derived")
	}
	noKey := func(name string, wire, ctx []byte, proto, kdf string) {
		t.Helper()
		_, err := cb.Lookup(c, wire, ctx, proto, kdf)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != api.CodeNoKey || ce.Status != 404 {
			t.Errorf("%s: got %v, want no_key", name, err)
		}
	}
	noKey("other context", wire, []byte("pskvault:node-a>node-x"), "", "")
	noKey("other protocol", wire, nil, "dtls1.3", "")
	noKey("other kdf", wire, nil, "", "sha384")
	noKey("trailing byte", append(append([]byte{}, wire...), 0), nil, "", "")
	noKey("truncated", wire[:len(wire)-1], nil, "", "")
	noKey("external identity only", p.identity, nil, "", "")
	bad, _ := importer.Identity{External: []byte("tls-a-B"), Context: ctx, Protocol: importer.TLS13, KDF: importer.HKDFSHA256}.Marshal()
	noKey("identity differs in case", bad, nil, "", "")
	// node-a is the client of this PSK: it never answers a server lookup.
	ca := client.New(p.a.data)
	defer ca.Close()
	ca.UseBinary(bin)
	_, err = ca.Lookup(c, wire, nil, "", "")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != api.CodeNoKey {
		t.Errorf("client node answered a lookup: %v", err)
	}

	offers, err := ca.Offers(c, "node-b", ctx, "tls1.3", "sha256")
	if err != nil {
		t.Fatal(err)
	}
	if len(offers) != 1 || !bytes.Equal(offers[0].ImportedIdentity, wire) || !bytes.Equal(offers[0].IPSKX, key) {
		t.Fatalf("offers to node-b: got %d, want the one PSK", len(offers))
	}
	if offers, _ := ca.Offers(c, "node-x", ctx, "tls1.3", "sha256"); len(offers) != 0 {
		t.Fatalf("offers to node-x: got %d, want none", len(offers))
	}
	if offers, _ := cb.Offers(c, "node-a", ctx, "tls1.3", "sha256"); len(offers) != 0 {
		t.Fatalf("server node offered %d keys", len(offers))
	}
}
