package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pskvault/pskvault/api/wire"
	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
)

func batchKeyHex(i int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "cli batch test key %d", i))
	return fmt.Sprintf("%x", sum)
}

// jsonEntry is one JSON line of a batch file.
func jsonEntry(identity string, i int) string {
	return fmt.Sprintf(`{"identity":%q,"client":"node-a","server":"node-b","node_context":true,"key_hex":%q}`+"\n", identity, batchKeyHex(i))
}

func writePrivate(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// listJSONOf lists every record of n through the CLI (following pages).
func listJSONOf(t *testing.T, n *node, extra ...string) wire.PSKList {
	t.Helper()
	out, errOut, code := n.runSplit(nil, append([]string{"psk", "list", "--json"}, extra...)...)
	if code != 0 {
		t.Fatalf("psk list --json: exit %d: %s", code, errOut)
	}
	var l wire.PSKList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("psk list --json is not one JSON object: %v", err)
	}
	return l
}

// TestBatchCLI: psk import --batch against real daemons, from a file of
// bundles and JSON entries, from a directory of bundles and from standard
// input; a bad entry refuses its whole batch and is named by index and
// line; list and check page through the records.
func TestBatchCLI(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	b := newNode(t, "node-b", "soft")
	a.start()
	b.start()
	dir := t.TempDir()

	// Bundles made on node-a for node-b, as a provisioning host would.
	bundleDir := filepath.Join(dir, "node-b")
	os.Mkdir(bundleDir, 0o700)
	var bundles [][]byte
	for i := range 4 {
		id := fmt.Sprintf("bundled-%d", i)
		out, errOut, code := a.runSplit(nil, "psk", "create", "--identity", id, "--client", "node-a", "--server", "node-b", "--node-context", "--valid-for", "720h", "--out", "-")
		if code != 0 {
			t.Fatalf("create %s: exit %d: %s", id, code, errOut)
		}
		bundles = append(bundles, []byte(out))
	}

	t.Run("a file of JSON entries and bundles", func(t *testing.T) {
		var f bytes.Buffer
		f.WriteString("# made by a provisioning run\n")
		f.WriteString(jsonEntry("json-0", 0))
		f.Write(bundles[0])
		f.WriteString("\n")
		f.WriteString(jsonEntry("json-1", 1))
		f.Write(bundles[1])
		path := filepath.Join(dir, "batch.txt")
		writePrivate(t, path, f.Bytes())
		out, code := b.run(nil, "psk", "import", "--batch", path)
		if code != 0 || !strings.Contains(out, "imported 4 PSK(s) in 1 batch(es)") || !strings.Contains(out, "key check values of the 2 bundle(s) match") {
			t.Fatalf("import --batch: exit %d: %s", code, out)
		}
		var responses bytes.Buffer
		sameKeys(t, a, b, "bundled-0", []string{"tls1.3/sha256"}, &responses)
		if p := showJSON(t, b, "json-1"); !p.NodeContext || p.KCV == "" || p.ServerNode != "node-b" {
			t.Fatalf("JSON entry's policy did not arrive: %+v", p)
		}
	})

	t.Run("a directory of bundles, in batches of one", func(t *testing.T) {
		writePrivate(t, filepath.Join(bundleDir, "l2.g1.bundle"), bundles[2])
		writePrivate(t, filepath.Join(bundleDir, "l3.g1.bundle"), bundles[3])
		out, code := b.run(nil, "psk", "import", "--batch", bundleDir, "--batch-size", "1")
		if code != 0 || !strings.Contains(out, "imported 2 PSK(s) in 2 batch(es)") {
			t.Fatalf("import --batch DIR: exit %d: %s", code, out)
		}
		var responses bytes.Buffer
		sameKeys(t, a, b, "bundled-3", []string{"dtls1.3/sha384"}, &responses)
	})

	t.Run("one bad entry refuses its batch, named by index and line", func(t *testing.T) {
		before := len(listJSONOf(t, b).PSKs)
		var f bytes.Buffer
		f.WriteString(jsonEntry("bad-0", 10))
		f.WriteString(jsonEntry("bad-1", 11))
		f.WriteString(jsonEntry("json-0", 12)) // already in the vault
		f.WriteString(jsonEntry("bad-3", 1))   // the key of json-1
		f.WriteString(jsonEntry("bad-4", 10))  // the key of entry 0
		out, errOut, code := b.runSplit(f.Bytes(), "psk", "import", "--batch", "-")
		if code == 0 {
			t.Fatalf("a bad batch was imported: %s", out)
		}
		for _, want := range []string{"entry 2 (stdin:3)", "[exists]", "entry 3 (stdin:4)", "entry 4 (stdin:5)", "[key_reused]", "none of its entries imported"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr lacks %q: %s", want, errOut)
			}
		}
		if strings.Contains(errOut, batchKeyHex(10)) || strings.Contains(out, batchKeyHex(10)) {
			t.Fatal("a key appears in the output")
		}
		if n := len(listJSONOf(t, b).PSKs); n != before {
			t.Fatalf("refused batch changed the vault: %d records, was %d", n, before)
		}
		// A later batch is not touched by an earlier one's success: with
		// --batch-size 2 the first batch (bad-0, bad-1) lands, the second
		// is refused.
		_, errOut, code = b.runSplit(f.Bytes(), "psk", "import", "--batch", "-", "--batch-size", "2")
		if code == 0 || !strings.Contains(errOut, "2 entries were imported by earlier batches") {
			t.Fatalf("second batch: exit %d: %s", code, errOut)
		}
		if n := len(listJSONOf(t, b).PSKs); n != before+2 {
			t.Fatalf("%d records, want %d", n, before+2)
		}
	})

	t.Run("a world-readable batch file is refused", func(t *testing.T) {
		path := filepath.Join(dir, "open.txt")
		os.WriteFile(path, []byte(jsonEntry("open-0", 20)), 0o644)
		os.Chmod(path, 0o644)
		if out, code := b.run(nil, "psk", "import", "--batch", path); code == 0 || !strings.Contains(out, "can be read by other users") {
			t.Fatalf("exit %d: %s", code, out)
		}
	})

	t.Run("list and check page through 1200 records", func(t *testing.T) {
		var f bytes.Buffer
		for i := range 1200 {
			f.WriteString(jsonEntry(fmt.Sprintf("many-%04d", i), 100+i))
		}
		if out, code := b.run(f.Bytes(), "psk", "import", "--batch", "-"); code != 0 {
			t.Fatalf("import: exit %d: %s", code, out)
		}
		all := listJSONOf(t, b)
		if len(all.PSKs) != 1208 || all.NextCursor != "" {
			t.Fatalf("list --json followed the pages to %d records, want 1208", len(all.PSKs))
		}
		// The table too, one row per record.
		out, _, code := b.runSplit(nil, "psk", "list")
		if code != 0 || strings.Count(out, "\n") != 1209 || strings.Count(out, "IDENTITY") != 1 {
			t.Fatalf("psk list: exit %d, %d lines", code, strings.Count(out, "\n"))
		}
		// One page, and the next from its cursor.
		out, errOut, code := b.runSplit(nil, "psk", "list", "--limit", "3")
		m := regexp.MustCompile(`--cursor (\S+)`).FindStringSubmatch(errOut)
		if code != 0 || strings.Count(out, "\n") != 4 || m == nil {
			t.Fatalf("list --limit 3: exit %d: %s%s", code, out, errOut)
		}
		page := listJSONOf(t, b, "--limit", "3", "--cursor", m[1])
		if len(page.PSKs) != 3 || page.PSKs[0].IdentityHex != all.PSKs[3].IdentityHex || page.NextCursor == "" {
			t.Fatalf("page after the cursor starts at %s, want %s", page.PSKs[0].IdentityHex, all.PSKs[3].IdentityHex)
		}
		if _, errOut, code := b.runSplit(nil, "psk", "list", "--cursor", "not-a-cursor"); code == 0 || !strings.Contains(errOut, "invalid cursor") {
			t.Fatalf("bad cursor: exit %d: %s", code, errOut)
		}
		// check: one report over every page, its counts the sum.
		out, errOut, code = b.runSplit(nil, "check", "--json")
		var rep wire.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("check --json (exit %d, %s) is not one JSON object: %v", code, errOut, err)
		}
		if len(rep.PSKs) != 1208 || rep.Must != 0 || rep.Should < 1208 || code != 0 {
			t.Fatalf("check --json: exit %d, %d audits, %d MUST, %d SHOULD", code, len(rep.PSKs), rep.Must, rep.Should)
		}
		out, _, code = b.runSplit(nil, "check")
		if code != 0 || !strings.Contains(out, fmt.Sprintf("node node-b: 1208 PSK(s), 0 MUST violation(s), %d SHOULD finding(s)", rep.Should)) {
			t.Fatalf("check: exit %d: %s", code, out[max(0, len(out)-300):])
		}
	})
}

// TestBatchPKCS11RefusedLeavesNoObject: on a real SoftHSM2 token, a batch
// refused by its last entry leaves the token with the objects it had (the
// keys made for the earlier entries are destroyed), and a good batch adds
// one object per PSK, each deriving.
func TestBatchPKCS11RefusedLeavesNoObject(t *testing.T) {
	tok := pkcs11test.Require(t, "pskvault-batch")
	n := newNode(t, "node-b", tok.URI())
	n.start()
	// One PSK first: the vault's auxiliary key (key fingerprints, docs/DESIGN.md)
	// is a token object too, made at the first import and kept.
	if out, code := n.run([]byte(jsonEntry("p11-first", 299)), "psk", "import", "--batch", "-"); code != 0 {
		t.Fatalf("first import: exit %d: %s", code, out)
	}
	before := len(tokenKeyIDs(t, tok))
	if before != 2 {
		t.Fatalf("%d token objects after one import, want 2 (its key and the auxiliary key)", before)
	}
	var f bytes.Buffer
	for i := range 5 {
		f.WriteString(jsonEntry(fmt.Sprintf("p11-%d", i), 300+i))
	}
	f.WriteString(jsonEntry("p11-bad", 300)) // the key of entry 0
	out, errOut, code := n.runSplit(f.Bytes(), "psk", "import", "--batch", "-")
	if code == 0 || !strings.Contains(errOut, "entry 5 (stdin:6)") || !strings.Contains(errOut, "[key_reused]") {
		t.Fatalf("bad batch: exit %d: %s%s", code, out, errOut)
	}
	if got := len(tokenKeyIDs(t, tok)); got != before {
		t.Fatalf("the refused batch left %d token objects, the token had %d", got, before)
	}
	good := bytes.TrimSuffix(f.Bytes(), []byte(jsonEntry("p11-bad", 300)))
	if out, code := n.run(good, "psk", "import", "--batch", "-"); code != 0 {
		t.Fatalf("good batch: exit %d: %s", code, out)
	}
	if got := len(tokenKeyIDs(t, tok)); got != before+5 {
		t.Fatalf("after a batch of 5: %d token objects, want %d", got, before+5)
	}
	var responses bytes.Buffer
	for i := range 5 {
		deriveJSON(t, n, fmt.Sprintf("p11-%d", i), "", "tls1.3", "sha256", &responses)
	}
}

// TestBatchJSONLine: a JSON entry is read strictly (unknown fields, bad
// hex refused, the key never quoted) and its key decoded into the entry.
func TestBatchJSONLine(t *testing.T) {
	e, err := fromJSONLine([]byte(jsonEntry("x", 1)))
	if err != nil || string(e.Spec.Identity) != "x" || fmt.Sprintf("%x", e.Key) != batchKeyHex(1) || !e.Spec.Policy.NodeContext {
		t.Fatalf("good line: %v", err)
	}
	for _, bad := range []string{
		`{"identity":"x","client":"a","server":"b","key_hex":"` + batchKeyHex(1) + `","colour":"red"}`,
		`{"identity":"x","client":"a","server":"b","key_hex":"zz` + batchKeyHex(1)[2:] + `"}`,
		`{"identity":"x","client":"a","server":"b"}`,
		`{"identity":"x","key_hex":"` + batchKeyHex(1) + `"`,
	} {
		_, err := fromJSONLine([]byte(bad))
		if err == nil || strings.Contains(err.Error(), batchKeyHex(1)[4:]) {
			t.Errorf("%.40s...: %v", bad, err)
		}
	}
}
