package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestVersion: --version and version --json report the version, the
// commit the binary was built from (as the Go toolchain stamped it), the Go
// version and the backends compiled in.
func TestVersion(t *testing.T) {
	n := &node{t: t, dir: t.TempDir(), socket: filepath.Join(t.TempDir(), "s")}
	out, code := n.run(nil, "--version")
	if code != 0 || !strings.HasPrefix(out, "pskvault 0.") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("--version: exit %d: %s", code, out)
	}
	out, code = n.run(nil, "version", "--json")
	if code != 0 {
		t.Fatalf("version --json: exit %d: %s", code, out)
	}
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version --json: %v: %s", err, out)
	}
	if !strings.HasPrefix(v.Version, "0.") || v.GoVersion != runtime.Version() {
		t.Errorf("version --json: %+v", v)
	}
	for _, b := range []string{"soft", "tpm", "pkcs11"} {
		if !slices.Contains(v.Backends, b) {
			t.Errorf("version --json: backend %s missing from %v", b, v.Backends)
		}
	}
	// The commit is the toolchain's vcs.revision stamp, whatever it is
	// (none under -buildvcs=false).
	meta, err := exec.Command("go", "version", "-m", binary).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := ""
	for _, l := range strings.Split(string(meta), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision=") {
			want = strings.TrimPrefix(f[1], "vcs.revision=")
		}
	}
	if v.Commit != want {
		t.Errorf("version --json: commit %q, the binary was stamped with %q", v.Commit, want)
	}
}

// TestGroupHelp: every group word lists its subcommands with --help (exit
// 0), and alone (exit 2, a usage mistake).
func TestGroupHelp(t *testing.T) {
	n := &node{t: t, dir: t.TempDir(), socket: filepath.Join(t.TempDir(), "s")}
	groups := map[string][]string{}
	for name := range commands {
		if g, sub, ok := strings.Cut(name, " "); ok {
			groups[g] = append(groups[g], sub)
		}
	}
	for _, g := range []string{"psk", "tpm", "pkcs11", "config", "fleet"} {
		if len(groups[g]) == 0 {
			t.Errorf("no subcommands of %s registered", g)
		}
	}
	for g, subs := range groups {
		for _, args := range [][]string{{g, "--help"}, {g, "-h"}, {g, "help"}, {g}} {
			out, code := n.run(nil, args...)
			wantCode := 0
			if len(args) == 1 {
				wantCode = 2
			}
			if code != wantCode || !strings.Contains(out, "Usage: pskvault "+g+" COMMAND") {
				t.Errorf("%v: exit %d (want %d): %s", args, code, wantCode, out)
			}
			for _, s := range subs {
				if !strings.Contains(out, "  "+g+" "+s+" ") {
					t.Errorf("%v: subcommand %q not listed: %s", args, s, out)
				}
			}
		}
	}
	if out, code := n.run(nil, "psk", "frobnicate"); code != 2 || !strings.Contains(out, "unknown command") {
		t.Errorf("unknown subcommand: exit %d: %s", code, out)
	}
}

// TestStatus: status reports a real daemon's node, backend, problems, PSK
// counts by state and the next expiry, as text and as JSON; without a
// daemon it says so and exits 1.
func TestStatus(t *testing.T) {
	n := newNode(t, "node-a", "soft")
	out, code := n.run(nil, "status", "--json")
	var st statusInfo
	if code != 1 || json.Unmarshal([]byte(out[:strings.IndexByte(out, '\n')+1]), &st) != nil || st.Daemon != "unreachable" {
		t.Errorf("status without a daemon: exit %d: %s", code, out)
	}
	n.start()
	soon := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	later := soon.Add(24 * time.Hour)
	for i, a := range [][]string{
		{"--identity", "status-soon", "--not-after", soon.Format(time.RFC3339)},
		{"--identity", "status-later", "--not-after", later.Format(time.RFC3339)},
		{"--identity", "status-none"},
		{"--identity", "status-revoked"},
	} {
		args := append([]string{"psk", "create", "--client", "node-b", "--server", "node-a", "--format", "hex", "--out", filepath.Join(t.TempDir(), "k.hex")}, a...)
		if out, code := n.run(nil, args...); code != 0 {
			t.Fatalf("create %d: exit %d: %s", i, code, out)
		}
	}
	if out, code := n.run(nil, "psk", "revoke", "--identity", "status-revoked"); code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, out)
	}
	cmd := exec.Command(binary, "--state-dir", n.dir, "--socket", n.socket, "status", "--json")
	cmd.Stderr = os.Stderr
	js, err := cmd.Output()
	if err != nil {
		t.Fatalf("status --json: %v: %s", err, js)
	}
	st = statusInfo{}
	if err := json.Unmarshal(js, &st); err != nil {
		t.Fatalf("status --json: %v: %s", err, js)
	}
	if st.Daemon != "running" || st.Node != "node-a" || st.Backend == nil || st.Backend.Name != "soft" || st.Problems == nil || len(st.Problems) != 0 {
		t.Errorf("status --json: %s", js)
	}
	if st.PSKs["active"] != 3 || st.PSKs["revoked"] != 1 || st.Expired != 0 {
		t.Errorf("status --json: counts %v, expired %d: %s", st.PSKs, st.Expired, js)
	}
	if st.NextExpiry == nil || !st.NextExpiry.Equal(soon) {
		t.Errorf("status --json: next expiry %v, want %s", st.NextExpiry, soon)
	}
	out, code = n.run(nil, "status")
	for _, want := range []string{"daemon:      running", "node:        node-a", "backend:     soft", "problems:    none", "3 active", "1 revoked", "0 expired", "next expiry: " + soon.Format(time.RFC3339) + " (in "} {
		if !strings.Contains(out, want) {
			t.Errorf("status: %q missing: %s", want, out)
		}
	}
	if code != 0 {
		t.Errorf("status: exit %d: %s", code, out)
	}
}

// TestStatusProblems: with the audit log on a full file system the admin
// status's problems list says so, status prints it and exits 1, and the
// PSK counts are still there: they come with the status (the counts the
// vault keeps), not from a list, which is refused unaudited.
func TestStatusProblems(t *testing.T) {
	fs := smallFS(t, "1m")
	n := newNode(t, "node-a", "soft")
	n.serveWith("--audit-log", filepath.Join(fs, "audit.log"))
	if o, code := n.run(nil, "psk", "create", "--identity", "svc", "--client", "node-a", "--server", "node-b", "--out", filepath.Join(t.TempDir(), "k.hex")); code != 0 {
		t.Fatal(o)
	}
	if out, code := n.run(nil, "status"); code != 0 || !strings.Contains(out, "problems:    none") {
		t.Fatalf("status before the disk fills: exit %d: %s", code, out)
	}
	fill, err := os.Create(filepath.Join(fs, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for buf := make([]byte, 64<<10); ; {
		if _, err := fill.Write(buf); err != nil {
			break
		}
	}
	fill.Close()
	// Audited requests until one fails to write its line (the log may
	// hold reserved room): the daemon notes it.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if code, _ := rawHTTP(t, n.socket, "GET", "/v1/psks", "", ""); code == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the admin socket kept answering with the audit file system full")
		}
	}
	cmd := exec.Command(binary, "--state-dir", n.dir, "--socket", n.socket, "status", "--json")
	js, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("status --json with problems: %v, want exit 1: %s", err, js)
	}
	var st statusInfo
	if err := json.Unmarshal(js, &st); err != nil {
		t.Fatalf("status --json: %v: %s", err, js)
	}
	if st.Daemon != "running" || len(st.Problems) == 0 || !strings.Contains(st.Problems[0], "audit log not writable") {
		t.Errorf("status --json: problems %q: %s", st.Problems, js)
	}
	if st.PSKs["active"] != 1 {
		t.Errorf("status --json: PSK counts %v with the audit log full, want 1 active: %s", st.PSKs, js)
	}
	out, _ := n.run(nil, "status")
	if !strings.Contains(out, "problems:\n  - audit log not writable") {
		t.Errorf("status: the audit problem not listed: %s", out)
	}
}
