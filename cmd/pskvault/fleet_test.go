package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
	"github.com/pskvault/pskvault/bundle"
	"github.com/pskvault/pskvault/fleet"
	"github.com/pskvault/pskvault/internal/swtpmsim"
)

// fleetCmd runs the CLI with no vault (the provisioning host has none).
func fleetCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, append([]string{"fleet"}, args...)...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// generatedNodes writes n node records with generated TPM parents.
func generatedNodes(t *testing.T, dir string, n int) (lines []string, ids []string) {
	for i := range n {
		pub, err := fleet.GenerateTPMParent()
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("gen-%05d", i)
		p := filepath.Join(dir, id+".pub")
		if err := os.WriteFile(p, pub, 0o644); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, "node,"+id+",tpm,"+p)
		ids = append(ids, id)
	}
	return lines, ids
}

var bundleField = regexp.MustCompile(`(?m)^(identity-hex|key-check-value|generation): (.*)$`)

// bundleFacts is a bundle's identity, generation and key check value.
func bundleFacts(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, m := range bundleField.FindAllStringSubmatch(string(raw), -1) {
		parts = append(parts, m[2])
	}
	return strings.Join(parts, " ")
}

// TestFleetRealNodes: a fleet run wraps each link's key to a swtpm node
// and a SoftHSM2 node (and to generated TPM nodes); the two real nodes
// import their bundles with no other flag and complete a TLS 1.3
// handshake with each other; a rerun issues nothing; status and rotate
// follow the registry.
func TestFleetRealNodes(t *testing.T) {
	sim := swtpmsim.Start(t)
	edge := newNode(t, "edge-1", sim.URI())
	edge.start()
	tok := pkcs11test.Require(t, "pskvault-fleet")
	kekFile := writeKey(t, randKey(t))
	setup := &node{t: t, dir: t.TempDir(), socket: filepath.Join(t.TempDir(), "s")}
	if out, code := setup.run(nil, "pkcs11", "import-wrapping-key", "--backend", tok.URI(), "--label", "fleet-kek", "--key-file", kekFile); code != 0 {
		t.Fatalf("import-wrapping-key: exit %d: %s", code, out)
	}
	origin := newNode(t, "origin-1", tok.URI())
	origin.start()

	dir := t.TempDir()
	pub := filepath.Join(dir, "edge-1.pub")
	if out, code := edge.run(nil, "tpm", "parent-pub", "--out", pub); code != 0 {
		t.Fatalf("parent-pub: %s", out)
	}
	gen, ids := generatedNodes(t, dir, 3)
	inv := filepath.Join(dir, "inventory.csv")
	lines := append([]string{"# two real nodes and three that exist only as TPM parent keys",
		"node,edge-1,tpm," + pub, "node,origin-1,pkcs11," + kekFile + ",fleet-kek", "link,edge-1,origin-1"}, gen...)
	for _, id := range ids {
		lines = append(lines, "link,"+id+",origin-1")
	}
	os.WriteFile(inv, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	out := filepath.Join(dir, "out")
	res, code := fleetCmd(t, "provision", "--inventory", inv, "--out", out, "--valid-for", "2160h")
	if code != 0 || !strings.Contains(res, "4 links planned: 4 issued now") {
		t.Fatalf("fleet provision: exit %d: %s", code, res)
	}
	if res, code = fleetCmd(t, "provision", "--inventory", inv, "--out", out); code != 0 || !strings.Contains(res, "0 issued now") || !strings.Contains(res, "4 not due or already issued") {
		t.Fatalf("rerun issued again: exit %d: %s", code, res)
	}
	if res, _ = fleetCmd(t, "status", "--inventory", inv, "--out", out); !strings.Contains(res, "4 links planned: 4 issued (0 due for rotation") {
		t.Fatalf("status: %s", res)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*", "*"))
	for _, f := range files {
		if raw, err := os.ReadFile(f); err == nil && bytes.Contains(raw, []byte("key-kind: "+bundle.KeyClear)) {
			t.Fatalf("%s holds a key in clear", f)
		}
	}

	imp := func(n *node, file string) string {
		t.Helper()
		res, code := n.run(nil, "psk", "import", "--bundle", file)
		if code != 0 {
			t.Fatalf("import %s: exit %d: %s", file, code, res)
		}
		return res
	}
	g1 := "edge-1--origin-1.g1.bundle"
	kcvEdge := kcvOf(t, imp(edge, filepath.Join(out, "edge-1", g1)))
	if kcvOrigin := kcvOf(t, imp(origin, filepath.Join(out, "origin-1", g1))); kcvOrigin != kcvEdge {
		t.Fatal("key check values differ")
	}
	identity := func(file string) string {
		f := strings.Fields(bundleFacts(t, file))
		b, _ := hex.DecodeString(f[0])
		return string(b)
	}
	handshake(t, edge, origin, identity(filepath.Join(out, "edge-1", g1)))

	// Rotation of what expires within a year: all four links, once.
	if res, code = fleetCmd(t, "rotate", "--inventory", inv, "--out", out, "--expiring-within", "8760h", "--overlap", "24h"); code != 0 || !strings.Contains(res, "4 rotated now") {
		t.Fatalf("fleet rotate: exit %d: %s", code, res)
	}
	if res, _ = fleetCmd(t, "rotate", "--inventory", inv, "--out", out, "--expiring-within", "720h"); !strings.Contains(res, "0 rotated now") {
		t.Fatalf("second rotate, nothing due: %s", res)
	}
	g2 := "edge-1--origin-1.g2.bundle"
	imp(edge, filepath.Join(out, "edge-1", g2))
	imp(origin, filepath.Join(out, "origin-1", g2))
	handshake(t, edge, origin, identity(filepath.Join(out, "edge-1", g2)))
}

// handshake derives the PSK on both nodes (client edge, server origin)
// and runs an openssl TLS 1.3 handshake between the two keys.
func handshake(t *testing.T, client, server *node, identity string) {
	t.Helper()
	var responses bytes.Buffer
	wc, kc := deriveJSON(t, client, identity, "", "tls1.3", "sha256", &responses)
	ws, ks := deriveJSON(t, server, identity, "", "tls1.3", "sha256", &responses)
	if wc != ws {
		t.Fatal("the two nodes derive different imported identities")
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		swtpmsim.SkipOrFail(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := startDemoServer(ctx, openssl, ks, ws)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	cli := exec.CommandContext(ctx, openssl, "s_client", "-connect", "127.0.0.1:"+srv.port, "-tls1_3",
		"-ciphersuites", "TLS_AES_128_GCM_SHA256", "-psk", kc, "-psk_identity", wc, "-brief")
	cli.Stdin = strings.NewReader("hello from edge-1\n")
	got, err := cli.CombinedOutput()
	if err != nil {
		t.Fatalf("s_client: %v (%d bytes of output withheld: they name the key)", err, len(got))
	}
	<-srv.exited
	if !strings.Contains(srv.out.String(), "hello from edge-1") || !strings.Contains(string(got), "TLSv1.3") {
		t.Fatal("no TLS 1.3 handshake between the two nodes' keys")
	}
}

// TestFleetKilledHalfway: a run killed with SIGKILL in the middle and run
// again issues each link exactly once: bundles written before the kill are
// kept as they are, the registry holds one generation per link, both
// bundles of each link carry the same identity and key check value, and no
// temporary file is left.
func TestFleetKilledHalfway(t *testing.T) {
	dir := t.TempDir()
	const n = 3000
	gen, ids := generatedNodes(t, dir, n)
	lines := gen
	for i := range n {
		lines = append(lines, fmt.Sprintf("link,%s,%s", ids[i], ids[(i+1)%n]))
	}
	inv := filepath.Join(dir, "inventory.csv")
	os.WriteFile(inv, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	out := filepath.Join(dir, "out")
	cmd := exec.Command(binary, "fleet", "provision", "--inventory", inv, "--out", out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		final, _ := filepath.Glob(filepath.Join(out, "*", "*.bundle"))
		if len(final) >= 2*256 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the run ended (%v) before it could be killed halfway", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no batch recorded within 2 minutes")
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	before := map[string]string{}
	final, _ := filepath.Glob(filepath.Join(out, "*", "*.bundle"))
	if len(final) >= 2*n {
		t.Fatalf("the run had finished (%d bundles) when it was killed", len(final))
	}
	for _, f := range final {
		before[f] = bundleFacts(t, f)
	}
	res, code := fleetCmd(t, "provision", "--inventory", inv, "--out", out)
	if code != 0 {
		t.Fatalf("rerun: exit %d: %s", code, res)
	}
	t.Logf("killed with %d of %d bundles in place; rerun: %s", len(final), 2*n, strings.TrimSpace(res))
	for f, facts := range before {
		if bundleFacts(t, f) != facts {
			t.Fatalf("%s was reissued by the rerun", f)
		}
	}
	if tmp, _ := filepath.Glob(filepath.Join(out, "*", "*.tmp")); len(tmp) != 0 {
		t.Fatalf("%d temporary files left", len(tmp))
	}
	reg, err := fleet.OpenRegistry(filepath.Join(out, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	latest, err := reg.Latest()
	reg.Close()
	if err != nil || len(latest) != n {
		t.Fatalf("registry holds %d links, want %d (%v)", len(latest), n, err)
	}
	for i := range n {
		l := fleet.Link{Client: ids[i], Server: ids[(i+1)%n]}
		is := latest[l.Name()]
		if is == nil || is.Generation != 1 {
			t.Fatalf("link %s: %+v", l.Name(), is)
		}
		want := fmt.Sprintf("%x %s %s", is.Identity, "1", is.KCV)
		for _, nid := range []string{l.Client, l.Server} {
			if got := bundleFacts(t, filepath.Join(out, nid, l.Name()+".g1.bundle")); got != want {
				t.Fatalf("link %s, bundle for %s: %q, registry %q", l.Name(), nid, got, want)
			}
		}
	}
	if files, _ := filepath.Glob(filepath.Join(out, "*", "*.bundle")); len(files) != 2*n {
		t.Fatalf("%d bundles, want exactly %d", len(files), 2*n)
	}
}
