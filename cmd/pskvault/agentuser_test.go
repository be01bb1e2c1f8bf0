package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAgentUnprivileged backs what contrib/systemd/pskvault-agent.service
// says: the agent, run as its own unprivileged user with no capability,
// writes a key file into a directory of its own and gives it to a
// consumer's group it is a member of (mode 0640); giving it to another
// owner, or to a group it is not in, fails (that needs CAP_CHOWN). Real
// uids: the agent runs as uid 65532 with supplementary group 65531.
func TestAgentUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the agent as another uid")
	}
	const agentUID, consumerGID, otherGID = 65532, 65531, 65529
	a := newNode(t, "node-a", "soft")
	root := filepath.Dir(a.dir)
	for _, d := range []string{filepath.Dir(binary), root, filepath.Dir(root)} {
		os.Chmod(d, 0o755)
	}
	a.serveWith("--allow-client", fmt.Sprintf("user:%d", agentUID))
	if o, code := a.run(nil, "psk", "import", "--identity", "ag-1", "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, testKey(32))); code != 0 {
		t.Fatalf("import: %s", o)
	}
	// /etc/pskvault/keys as tmpfiles.d makes it: 0755, the agent's.
	keys := filepath.Join(root, "keys")
	if err := os.Mkdir(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(keys, agentUID, agentUID)
	cred := &syscall.Credential{Uid: agentUID, Gid: agentUID, Groups: []uint32{consumerGID}}
	agent := func(output map[string]any) (string, int) {
		t.Helper()
		cfg := map[string]any{"data_socket": defaultDataSocket(a.socket), "outputs": []any{output}}
		b, _ := json.Marshal(cfg)
		path := filepath.Join(root, "agent.json")
		os.Remove(path)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return a.runAs(cred, "agent", "--config", path, "--once")
	}
	file := filepath.Join(keys, "client.json")
	o, code := agent(map[string]any{"path": file, "format": "json", "role": "client", "identities": []string{"ag-1"},
		"group": fmt.Sprint(consumerGID), "mode": "0640"})
	if code != 0 {
		t.Fatalf("agent as uid %d, file for its group %d: exit %d: %s", agentUID, consumerGID, code, o)
	}
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if sys.Uid != agentUID || sys.Gid != consumerGID || st.Mode().Perm() != 0o640 {
		t.Errorf("%s: uid %d gid %d mode %04o, want %d %d 0640", file, sys.Uid, sys.Gid, st.Mode().Perm(), agentUID, consumerGID)
	}
	for _, bad := range []map[string]any{
		{"path": filepath.Join(keys, "owner.json"), "format": "json", "role": "client", "identities": []string{"ag-1"}, "owner": "65530"},
		{"path": filepath.Join(keys, "group.json"), "format": "json", "role": "client", "identities": []string{"ag-1"}, "group": fmt.Sprint(otherGID), "mode": "0640"},
	} {
		if o, code := agent(bad); code == 0 || !strings.Contains(o, "operation not permitted") {
			t.Errorf("agent as uid %d with %v: exit %d (want EPERM: that needs CAP_CHOWN): %s", agentUID, bad, code, o)
		}
		if _, err := os.Lstat(bad["path"].(string)); err == nil {
			t.Errorf("%s written although the chown failed", bad["path"])
		}
	}
}
