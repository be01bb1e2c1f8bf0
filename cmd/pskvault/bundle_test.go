package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
)

// runSplit runs the CLI against n with stdout and stderr apart.
func (n *node) runSplit(stdin []byte, args ...string) (stdout, stderr string, code int) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"--state-dir", n.dir, "--socket", n.socket}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return o.String(), e.String(), ee.ExitCode()
	}
	if err != nil {
		n.t.Fatalf("run pskvault: %v", err)
	}
	return o.String(), e.String(), 0
}

var kcvLine = regexp.MustCompile(`key check value ([0-9a-f]{6})`)

// kcvOf finds the key check value a CLI run printed.
func kcvOf(t *testing.T, out string) string {
	t.Helper()
	m := kcvLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no key check value printed: %s", out)
	}
	return m[1]
}

// showJSON returns a PSK record through psk show --json.
func showJSON(t *testing.T, n *node, identity string) api.PSK {
	t.Helper()
	out, code := n.run(nil, "psk", "show", "--identity", identity, "--json")
	if code != 0 {
		t.Fatalf("show %s: exit %d: %s", identity, code, out)
	}
	var p api.PSK
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("show --json: %v", err)
	}
	return p
}

// sameKeys derives identity on both nodes for each target (a as client, b
// as server, node contexts filled in by each daemon) and compares the keys.
func sameKeys(t *testing.T, a, b *node, identity string, targets []string, responses *bytes.Buffer) {
	t.Helper()
	for _, tg := range targets {
		proto, kdf, _ := strings.Cut(tg, "/")
		wa, ka := deriveJSON(t, a, identity, "", proto, kdf, responses)
		wb, kb := deriveJSON(t, b, identity, "", proto, kdf, responses)
		if wa != wb || ka != kb || ka == "" {
			t.Errorf("%s %s: the two nodes derive different identities or keys (values withheld)", identity, tg)
		}
	}
}

// TestBundle: psk create writes a bundle to standard output, the peer
// imports it with no other flag, and both derive the same keys for every
// allowed target; a bundle for another node, an edited bundle, widening
// flags and readable key files are refused; narrowing flags are honoured;
// a rotation bundle carries the overlap.
func TestBundle(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	b := newNode(t, "node-b", "soft")
	c := newNode(t, "node-c", "soft")
	a.start()
	b.start()
	c.start()
	var responses bytes.Buffer
	targets := []string{"tls1.3/sha256", "dtls1.3/sha384"}

	create := func(t *testing.T, identity string, extra ...string) (bundle []byte, kcv string) {
		t.Helper()
		args := append([]string{"psk", "create", "--identity", identity, "--client", "node-a", "--server", "node-b", "--node-context",
			"--target", targets[0], "--target", targets[1], "--valid-for", "720h", "--out", "-"}, extra...)
		out, errOut, code := a.runSplit(nil, args...)
		if code != 0 {
			t.Fatalf("create %s: exit %d: %s", identity, code, errOut)
		}
		if !strings.HasPrefix(out, "pskvault-bundle 1\n") {
			t.Fatalf("create --out - wrote no bundle to standard output (stderr: %s)", errOut)
		}
		return []byte(out), kcvOf(t, errOut)
	}

	t.Run("create | import --bundle - with no other flag: same keys", func(t *testing.T) {
		bun, kcvA := create(t, "link")
		out, code := b.run(bun, "psk", "import", "--bundle", "-")
		if code != 0 {
			t.Fatalf("import --bundle -: exit %d: %s", code, out)
		}
		if kcvB := kcvOf(t, out); kcvB != kcvA {
			t.Fatalf("key check values differ: %s on node-a, %s on node-b", kcvA, kcvB)
		}
		pb := showJSON(t, b, "link")
		if !pb.NodeContext || strings.Join(pb.Targets, ",") != strings.Join(targets, ",") || pb.ClientNode != "node-a" || pb.ServerNode != "node-b" || pb.NotAfter.IsZero() || pb.KCV != kcvA {
			t.Fatalf("the bundle's policy did not arrive whole: %+v", pb)
		}
		if out, _ := b.run(nil, "psk", "show", "--identity", "link"); !strings.Contains(out, "key_check_value  "+kcvA) && !strings.Contains(out, kcvA) {
			t.Errorf("psk show does not print the key check value: %s", out)
		}
		sameKeys(t, a, b, "link", targets, &responses)
	})

	t.Run("a bundle for another node is refused", func(t *testing.T) {
		bun, _ := create(t, "link-c")
		out, code := c.run(bun, "psk", "import", "--bundle", "-")
		if code == 0 || !strings.Contains(out, "not for this node") || !strings.Contains(out, "for node node-b") {
			t.Fatalf("node-c imported node-b's bundle: exit %d: %s", code, out)
		}
		if out, _ := c.run(nil, "psk", "list"); strings.Contains(out, "link-c") {
			t.Fatal("the refused bundle left a record on node-c")
		}
	})

	t.Run("an edited bundle is refused", func(t *testing.T) {
		bun, _ := create(t, "link-edit")
		for _, e := range []struct{ from, to string }{
			{"early-data: no", "early-data: yes"},
			{"psk-dhe-ke-required: yes", "psk-dhe-ke-required: no"},
			{"targets: tls1.3/sha256,dtls1.3/sha384", "targets: tls1.3/sha256,dtls1.3/sha256"},
			{"node-context: yes", "node-context: no"},
			{"not-after: 2", "not-after: 3"},
		} {
			edited := bytes.Replace(bun, []byte(e.from), []byte(e.to), 1)
			if bytes.Equal(edited, bun) {
				t.Fatalf("edit %q not applied", e.from)
			}
			out, code := b.run(edited, "psk", "import", "--bundle", "-")
			if code == 0 || !strings.Contains(out, "bundle authentication failed") {
				t.Errorf("bundle with %q edited to %q: exit %d: %s", e.from, e.to, code, out)
			}
		}
		if out, _ := b.run(nil, "psk", "list"); strings.Contains(out, "link-edit") {
			t.Fatal("a refused bundle left a record")
		}
		// One key byte changed: the MAC key changes with it.
		i := bytes.Index(bun, []byte("\nkey: ")) + 6
		edited := bytes.Clone(bun)
		edited[i] ^= 0x01 // '0'..'9' <-> another hex digit or a letter; either way not the key
		if out, code := b.run(edited, "psk", "import", "--bundle", "-"); code == 0 {
			t.Errorf("bundle with a key digit changed imported: %s", out)
		}
		if out, code := b.run(bun, "psk", "import", "--bundle", "-"); code != 0 {
			t.Fatalf("the unedited bundle: exit %d: %s", code, out)
		}
	})

	t.Run("flags beside --bundle only narrow", func(t *testing.T) {
		bun, _ := create(t, "link-narrow")
		for _, w := range [][]string{
			{"--allow-early-data"},
			{"--allow-psk-ke"},
			{"--target", "tls1.3/sha384"},
			{"--valid-for", "8760h"},
			{"--hash", "sha384"},
			{"--client", "node-x"},
		} {
			out, code := b.run(bun, append([]string{"psk", "import", "--bundle", "-"}, w...)...)
			if code == 0 || !(strings.Contains(out, "only narrow") || strings.Contains(out, "widens")) {
				t.Errorf("widening flag %v accepted: exit %d: %s", w, code, out)
			}
		}
		out, code := b.run(bun, "psk", "import", "--bundle", "-", "--target", "tls1.3/sha256", "--valid-for", "24h")
		if code != 0 {
			t.Fatalf("narrowing flags refused: exit %d: %s", code, out)
		}
		p := showJSON(t, b, "link-narrow")
		if strings.Join(p.Targets, ",") != "tls1.3/sha256" || time.Until(p.NotAfter) > 25*time.Hour {
			t.Fatalf("narrowing flags not honoured: targets %v, not after %s", p.Targets, p.NotAfter)
		}
		if out, code := b.run(nil, "derive", "--identity", "link-narrow", "--protocol", "dtls1.3", "--kdf", "sha384"); code == 0 {
			t.Fatalf("a target narrowed away still derives: %s", out)
		}
	})

	t.Run("a bundle or key file others can read is refused", func(t *testing.T) {
		dir := t.TempDir()
		bun, _ := create(t, "link-file")
		path := filepath.Join(dir, "bundle")
		if err := os.WriteFile(path, bun, 0o644); err != nil {
			t.Fatal(err)
		}
		out, code := b.run(nil, "psk", "import", "--bundle", path)
		if code == 0 || !strings.Contains(out, "can be read by other users") || !strings.Contains(out, "chmod 600") {
			t.Fatalf("0644 bundle: exit %d: %s", code, out)
		}
		os.Chmod(path, 0o600)
		out, code = b.run(nil, "psk", "import", "--bundle", path)
		if code != 0 || !strings.Contains(out, "still holds the key in clear") || !strings.Contains(out, "shred -u "+path) {
			t.Fatalf("0600 bundle: exit %d: %s", code, out)
		}
		key := filepath.Join(dir, "key.hex")
		os.WriteFile(key, []byte("7c2e5a09d18f3b64e2a1c05f9b7d3e8a0f4c6b2d9e1a7f3c5b8d0e2f4a6c8e1b\n"), 0o640)
		out, code = b.run(nil, "psk", "import", "--identity", "kf", "--client", "node-a", "--server", "node-b", "--key-file", key)
		if code == 0 || !strings.Contains(out, "can be read by other users (mode 0640)") {
			t.Fatalf("0640 key file: exit %d: %s", code, out)
		}
		os.Chmod(key, 0o600)
		out, code = b.run(nil, "psk", "import", "--identity", "kf", "--client", "node-a", "--server", "node-b", "--key-file", key)
		if code != 0 || !strings.Contains(out, "still holds the key in clear") {
			t.Fatalf("0600 key file: exit %d: %s", code, out)
		}
	})

	t.Run("a rotation bundle carries the overlap", func(t *testing.T) {
		out, errOut, code := a.runSplit(nil, "psk", "rotate", "--identity", "link", "--new-identity", "link.g2", "--overlap", "24h", "--out", "-")
		if code != 0 {
			t.Fatalf("rotate: exit %d: %s", code, errOut)
		}
		if !strings.Contains(out, "\noverlap: 24h0m0s\n") || !strings.Contains(out, "\nrotates-hex: 6c696e6b\n") || !strings.Contains(out, "\ngeneration: 2\n") {
			t.Fatalf("rotation bundle lacks the overlap or the generation it rotates:\n%s", strings.SplitN(out, "\nkey: ", 2)[0])
		}
		kcvA := kcvOf(t, errOut)
		res, code := b.run([]byte(out), "psk", "import", "--bundle", "-")
		if code != 0 {
			t.Fatalf("import of the rotation bundle: exit %d: %s", code, res)
		}
		if kcvOf(t, res) != kcvA {
			t.Fatal("key check values of the new generation differ")
		}
		g2 := showJSON(t, b, "link.g2")
		if g2.Generation != 2 || g2.RotatedFrom != "6c696e6b" {
			t.Fatalf("new generation on node-b: %+v", g2)
		}
		old := showJSON(t, b, "link")
		if left := time.Until(old.NotAfter); left > 24*time.Hour+time.Minute || left < 23*time.Hour {
			t.Fatalf("the old generation on node-b expires in %s, want the bundle's 24h overlap", left)
		}
		sameKeys(t, a, b, "link.g2", targets, &responses)
	})

	a.stop()
	b.stop()
	c.stop()
	if bytes.Contains(responses.Bytes(), []byte("pskvault-bundle")) {
		t.Fatal("a derive answer holds a bundle")
	}
}
