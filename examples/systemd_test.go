package examples

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnits checks contrib/systemd with systemd's own parser: every
// key known, every command present (ExecStart pointed at the binary just
// built), and the service's exposure score (systemd-analyze security) at
// most 2.0 on its 0–10 scale, so a hardening line dropped by mistake fails.
// The daemon's unit must not run it as root (issue 13): User=pskvault; nor
// the agent's: User=pskvault-agent, no capability.
func TestSystemdUnits(t *testing.T) {
	sa := requireTool(t, "systemd-analyze")
	dir := t.TempDir()
	units := []string{"pskvault.service", "pskvault-admin.socket", "pskvault-data.socket", "pskvault-agent.service", "pskvault-sweep.service", "pskvault-sweep.timer"}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("..", "contrib", "systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("/usr/bin/pskvault")) && strings.HasSuffix(u, ".service") {
			t.Fatal("pskvault.service no longer runs /usr/bin/pskvault; update this test")
		}
		if u == "pskvault.service" && !bytes.Contains(b, []byte("\nUser=pskvault\n")) {
			t.Fatal("pskvault.service must run the daemon as User=pskvault, not as root")
		}
		// The agent: its own user, no capability (the unit says why;
		// TestAgentUnprivileged in cmd/pskvault runs it so).
		if u == "pskvault-agent.service" && (!bytes.Contains(b, []byte("\nUser=pskvault-agent\n")) || !bytes.Contains(b, []byte("\nCapabilityBoundingSet=\n")) || !bytes.Contains(b, []byte("\nAmbientCapabilities=\n"))) {
			t.Fatal("pskvault-agent.service must run the agent as User=pskvault-agent with no capability")
		}
		b = bytes.ReplaceAll(b, []byte("/usr/bin/pskvault"), []byte(pskvaultBin))
		if err := os.WriteFile(filepath.Join(dir, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verify := exec.Command(sa, append([]string{"verify", "--man=no"}, units...)...)
	verify.Dir = dir
	out, err := verify.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, svc := range []string{"pskvault.service", "pskvault-agent.service", "pskvault-sweep.service"} {
		sec := exec.Command(sa, "security", "--offline=true", "--threshold=20", "--no-pager", svc)
		sec.Dir = dir
		out, err = sec.CombinedOutput()
		if err != nil {
			i := strings.Index(string(out), "Overall exposure")
			t.Fatalf("systemd-analyze security %s: %v: %s", svc, err, strings.TrimSpace(string(out[max(i, 0):])))
		}
	}
}
