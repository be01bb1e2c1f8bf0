package examples

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAgentOwnUser: the agent runs as its own, unprivileged user and gets
// exactly what the access lists give that user: uid 65534 (allowed as
// server) gets the key, uid 65533 (not listed) gets an empty file, each
// file owned by its writer, 0600, in a directory of its own.
func TestAgentOwnUser(t *testing.T) {
	requireRoot(t)
	p := newPair(t)
	b := newNode(t, "node-b", "--allow-server", "user:65534")
	key := p.keyFile
	b.cli(t, "psk", "import", "--identity", string(p.identity), "--client", "node-a", "--server", "node-b", "--key-file", key)
	for _, c := range []struct {
		cred *syscall.Credential
		keys int
	}{{&syscall.Credential{Uid: 65534, Gid: 65534}, 1}, {&syscall.Credential{Uid: 65533, Gid: 65534}, 0}} {
		dir := filepath.Join(tempDir(t), "out")
		os.Mkdir(dir, 0o700)
		os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid))
		cfg := filepath.Join(tempDir(t), "agent.json")
		writeAgentConfig(t, cfg, b, map[string]any{"path": filepath.Join(dir, "server.psk"), "format": "stunnel", "role": "server"})
		os.Chmod(cfg, 0o644)
		if _, e, err := b.run(c.cred, "agent", "--config", cfg, "--once"); err != nil {
			t.Fatalf("agent as uid %d: %v: %s", c.cred.Uid, err, e)
		}
		f := filepath.Join(dir, "server.psk")
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != c.cred.Uid || fi.Mode().Perm() != 0o600 {
			t.Fatalf("uid %d's file: owner %d mode %v", c.cred.Uid, st.Uid, fi.Mode())
		}
		content, _ := os.ReadFile(f)
		if n := strings.Count(string(content), "\n"); n != c.keys {
			t.Fatalf("uid %d's file has %d keys, want %d", c.cred.Uid, n, c.keys)
		}
		if c.keys == 1 && !strings.Contains(string(content), hex.EncodeToString(p.identity)) {
			t.Fatalf("uid %d's file lacks the PSK", c.cred.Uid)
		}
	}

	// Selection by identity follows rotations: after a rotation the
	// output for "tls-a-b" holds the new generation too; another name
	// selects nothing.
	b.cli(t, "psk", "rotate", "--identity", string(p.identity), "--new-identity", "tls-a-b.g2", "--overlap", "1h", "--out", filepath.Join(t.TempDir(), "g2"))
	for _, c := range []struct {
		ids  []string
		keys int
	}{{[]string{string(p.identity)}, 2}, {[]string{"other"}, 0}} {
		dir := tempDir(t)
		os.Chmod(dir, 0o700)
		f := filepath.Join(dir, "sel.psk")
		cfg := filepath.Join(dir, "agent.json")
		writeAgentConfig(t, cfg, b, map[string]any{"path": f, "format": "stunnel", "role": "server", "identities": c.ids})
		if _, e, err := b.run(nil, "agent", "--config", cfg, "--once"); err != nil {
			t.Fatalf("agent: %v: %s", err, e)
		}
		content, _ := os.ReadFile(f)
		if n := strings.Count(string(content), "\n"); n != c.keys {
			t.Fatalf("identities %v: %d keys, want %d", c.ids, n, c.keys)
		}
	}
}
