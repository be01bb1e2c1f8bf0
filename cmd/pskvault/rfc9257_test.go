package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// TestRFC9257CheckCLI: `pskvault check` passes on a clean vault, and fails
// (exit status 1, the violation named) on one that breaks a MUST.
func TestRFC9257CheckCLI(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	out, code := a.run(nil, "psk", "create", "--random-identity", "--client", "node-a", "--server", "node-b",
		"--node-context", "--finalize", "--valid-for", "720h", "--out", filepath.Join(t.TempDir(), "peer.hex"))
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, out)
	}
	if !strings.Contains(out, "finalized            true") && !strings.Contains(out, "finalized") {
		t.Fatalf("create output lacks policy rows: %s", out)
	}
	out, code = a.run(nil, "check")
	if code != 0 || !strings.Contains(out, "0 MUST violation(s), 0 SHOULD finding(s), 0 warning(s)") {
		t.Fatalf("check on a clean vault: exit %d: %s", code, out)
	}
	out, code = a.run(nil, "check", "--json")
	var rep vault.Report
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK() || len(rep.PSKs) != 1 || !rep.PSKs[0].DHERequired || !rep.PSKs[0].Finalized {
		t.Fatalf("check --json: exit %d: %s", code, out)
	}

	// A SHOULD only: the low-entropy key allowed. check passes, --strict fails.
	weak := writeKey(t, []byte("correct horse battery staple!!"))
	out, code = a.run(nil, "psk", "import", "--identity", "weak", "--client", "node-b", "--server", "node-a", "--key-file", weak)
	if code != 1 || !strings.Contains(out, "looks low-entropy") || !strings.Contains(out, "--allow-low-entropy") {
		t.Fatalf("low-entropy import: exit %d: %s", code, out)
	}
	if out, code = a.run(nil, "psk", "import", "--identity", "weak", "--client", "node-b", "--server", "node-a", "--key-file", weak, "--allow-low-entropy", "--source", "legacy config"); code != 0 {
		t.Fatalf("low-entropy import allowed: exit %d: %s", code, out)
	}
	if out, code = a.run(nil, "check"); code != 0 || !strings.Contains(out, "LOW ENTROPY") {
		t.Fatalf("check with a SHOULD: exit %d: %s", code, out)
	}
	if out, code = a.run(nil, "check", "--strict"); code != 1 {
		t.Fatalf("check --strict with a SHOULD: exit %d: %s", code, out)
	}

	// Break a MUST behind the daemon's back: a second record with the same
	// key (fingerprint) for another pair, and a 64-bit key length.
	a.stop()
	db, err := bolt.Open(filepath.Join(a.dir, "vault.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// Records edited offline: the indexes are rebuilt at the next
		// start once their version is gone (vault/records.go).
		if err := tx.Bucket([]byte("meta")).Delete([]byte("indexes")); err != nil {
			return err
		}
		b := tx.Bucket([]byte("psks"))
		p, err := vault.DecodeRecord(b.Get([]byte("weak")))
		if err != nil {
			return err
		}
		p.Identity, p.ClientNode, p.KeyBits = []byte("copy"), "node-c", 64
		raw, err := vault.EncodeRecord(p)
		if err != nil {
			return err
		}
		return b.Put(p.Identity, raw)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	a.start()
	out, code = a.run(nil, "check")
	if code != 1 || !strings.Contains(out, "key is 64 bits") || !strings.Contains(out, "same key as PSK") || !strings.Contains(out, "RFC 9257 check failed") {
		t.Fatalf("check on a vault breaking a MUST: exit %d: %s", code, out)
	}
	if strings.Contains(out, "636f7272656374") { // hex of the key text
		t.Fatal("check output contains key material")
	}
	os.Remove(weak)
}

// TestRFC9257DeriveCarriesPolicy: derive answers carry psk_dhe_ke_required
// and early_data_allowed; --random-identity gives the recognisable shape.
func TestRFC9257DeriveCarriesPolicy(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	out, code := a.run(nil, "psk", "import", "--identity", "lax", "--client", "node-a", "--server", "node-b",
		"--key-file", writeKey(t, testKey(32)), "--allow-early-data")
	if code != 0 || !strings.Contains(out, "early data allowed") {
		t.Fatalf("import with early data: exit %d: %s", code, out)
	}
	out, code = a.run(nil, "derive", "--identity", "lax", "--json")
	var d map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil {
		t.Fatalf("derive: exit %d: %s", code, out)
	}
	if d["psk_dhe_ke_required"] != true || d["early_data_allowed"] != true || d["kind"] != "pairwise" {
		t.Fatalf("derive response policy fields: %s", out)
	}
	out, code = a.run(nil, "psk", "create", "--random-identity", "--client", "node-a", "--server", "node-b", "--out", filepath.Join(t.TempDir(), "k"), "--json")
	var p map[string]any
	if code != 0 || json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &p) != nil {
		t.Fatalf("create --random-identity: exit %d: %s", code, out)
	}
	if id, _ := p["identity"].(string); !vault.IsRandomIdentity([]byte(id)) {
		t.Fatalf("random identity %q", p["identity"])
	}
}

// TestRFC9257StackFormatsAndGroups: derive --format per stack, with the
// stack's limits; a group PSK derived with --peer and --role.
func TestRFC9257StackFormatsAndGroups(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	if out, code := a.run(nil, "psk", "import", "--identity", "fmt", "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, testKey(32))); code != 0 {
		t.Fatalf("import: exit %d: %s", code, out)
	}
	out, code := a.run(nil, "derive", "--identity", "fmt", "--json")
	var d map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil {
		t.Fatalf("derive: exit %d: %s", code, out)
	}
	out, code = a.run(nil, "derive", "--identity", "fmt", "--format", "openssl")
	if code != 0 || !strings.Contains(out, "-tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256 -psk_identity "+d["imported_identity"].(string)+" -psk "+d["ipskx"].(string)) {
		t.Fatalf("--format openssl: exit %d", code)
	}
	// --json and --format: a usage error, nothing printed on stdout
	// (examples/format_test.go runs the openssl line against real openssl).
	for _, f := range []string{"openssl", "gnutls", "hex"} {
		if out, code = a.run(nil, "derive", "--identity", "fmt", "--json", "--format", f); code != 2 || !strings.Contains(out, "--json and --format exclude each other") || strings.Contains(out, d["ipskx"].(string)) {
			t.Fatalf("--json --format %s: exit %d", f, code)
		}
	}
	if out, code = a.run(nil, "derive", "--identity", "fmt", "--kdf", "sha384", "--format", "mbedtls"); code != 1 || !strings.Contains(out, "mbedtls takes at most 32") {
		t.Fatalf("--format mbedtls with a 48-byte key: exit %d: %s", code, out)
	}
	if out, code = a.run(nil, "derive", "--identity", "fmt", "--format", "nss"); code != 2 {
		t.Fatalf("--format nss: exit %d: %s", code, out)
	}
	if out, code = a.run(nil, "psk", "create", "--identity", "grp", "--group", "node-a,node-b,node-c", "--for", "node-c", "--out", filepath.Join(t.TempDir(), "g")); code != 0 || !strings.Contains(out, "group") {
		t.Fatalf("create --group: exit %d: %s", code, out)
	}
	if out, code = a.run(nil, "derive", "--identity", "grp"); code != 1 || !strings.Contains(out, "needs the peer node") {
		t.Fatalf("group derive without --peer: exit %d: %s", code, out)
	}
	if out, code = a.run(nil, "derive", "--identity", "grp", "--peer", "node-b", "--role", "client", "--json"); code != 0 || !strings.Contains(out, `"kind":"group"`) {
		t.Fatalf("group derive: exit %d: %s", code, out)
	}
}

// TestRFC9257LifecycleCLI: rotate with overlap, revoke, sweep through the
// binary.
func TestRFC9257LifecycleCLI(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	tmp := t.TempDir()
	if out, code := a.run(nil, "psk", "create", "--identity", "gen1", "--client", "node-a", "--server", "node-b", "--valid-for", "720h", "--out", filepath.Join(tmp, "k1")); code != 0 {
		t.Fatalf("create: exit %d: %s", code, out)
	}
	out, code := a.run(nil, "psk", "rotate", "--identity", "gen1", "--new-identity", "gen2", "--overlap", "48h", "--out", filepath.Join(tmp, "k2"))
	if code != 0 || !strings.Contains(out, "rotated 67656e31 -> 67656e32") || !strings.Contains(out, "with the 48h0m0s overlap") || !strings.Contains(out, "psk import --bundle FILE") {
		t.Fatalf("rotate: exit %d: %s", code, out)
	}
	out, _ = a.run(nil, "psk", "show", "--identity", "gen2", "--json")
	if !strings.Contains(out, `"generation":2`) || !strings.Contains(out, `"rotated_from_hex":"67656e31"`) {
		t.Fatalf("new generation record: %s", out)
	}
	if out, code = a.run(nil, "derive", "--identity", "gen1"); code != 0 {
		t.Fatalf("old generation inside the overlap: exit %d: %s", code, out)
	}
	if out, code = a.run(nil, "psk", "revoke", "--identity", "gen2", "--reason", "node-b lost"); code != 0 || !strings.Contains(out, "node-b lost") {
		t.Fatalf("revoke: exit %d: %s", code, out)
	}
	if out, code = a.run(nil, "derive", "--identity", "gen2"); code != 1 || !strings.Contains(out, "revoked") {
		t.Fatalf("derive revoked: exit %d: %s", code, out)
	}
	if out, code = a.run(nil, "psk", "import", "--identity", "short-lived", "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, testKey(48)), "--valid-for", "1s"); code != 0 {
		t.Fatalf("import: exit %d: %s", code, out)
	}
	time.Sleep(1100 * time.Millisecond)
	if out, code = a.run(nil, "psk", "sweep"); code != 0 || !strings.Contains(out, "1 expired PSK(s) swept") {
		t.Fatalf("sweep: exit %d: %s", code, out)
	}
}

// TestRFC9257MustViolationNotServed: records edited in vault.db so that they
// break a MUST (64-bit key, client = server, a group without node
// contexts, one key under two identities) are listed by `check` and refused
// by derive, lookup and offers alike, while a sound record in the same
// vault is still served.
func TestRFC9257MustViolationNotServed(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--identity", "good", "--client", "node-a", "--server", "node-b"},
		{"--identity", "short", "--client", "node-a", "--server", "node-b"},
		{"--identity", "selfie", "--client", "node-b", "--server", "node-a"},
		{"--identity", "grp", "--group", "node-a,node-b,node-c", "--for", "node-b"},
		{"--identity", "orig", "--client", "node-b", "--server", "node-a"},
	} {
		if out, code := a.run(nil, append(append([]string{"psk", "create"}, args...), "--out", filepath.Join(dir, args[1]))...); code != 0 {
			t.Fatalf("create %s: exit %d: %s", args[1], code, out)
		}
	}
	derive := func(id string) (string, int) {
		args := []string{"derive", "--identity", id, "--json"}
		if id == "grp" {
			args = append(args, "--peer", "node-b", "--role", "client")
		}
		return a.run(nil, args...)
	}
	// The wire identities a TLS server would look up, taken while the
	// records were sound.
	wires := map[string]string{}
	for _, id := range []string{"good", "short", "selfie", "grp", "orig"} {
		out, code := derive(id)
		var d struct {
			ImportedIdentity string `json:"imported_identity"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &d) != nil {
			t.Fatalf("derive %s before the edit: exit %d", id, code)
		}
		wires[id] = d.ImportedIdentity
	}
	// The group's wire identity as node-a, server, sees it from node-b.
	gctx, _ := vault.NodeContext("node-b", "node-a")
	gplan, err := importer.NewPlan(importer.SHA256, importer.Identity{External: []byte("grp"), Context: gctx, Protocol: importer.TLS13, KDF: importer.HKDFSHA256})
	if err != nil {
		t.Fatal(err)
	}
	wires["grp"] = hex.EncodeToString(gplan.ImportedIdentity())

	a.stop()
	db, err := bolt.Open(filepath.Join(a.dir, "vault.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// Records edited offline: the indexes are rebuilt at the next
		// start once their version is gone (vault/records.go).
		if err := tx.Bucket([]byte("meta")).Delete([]byte("indexes")); err != nil {
			return err
		}
		b := tx.Bucket([]byte("psks"))
		edit := func(id string, f func(p *vault.PSK)) error {
			p, err := vault.DecodeRecord(b.Get([]byte(id)))
			if err != nil {
				return err
			}
			f(p)
			raw, err := vault.EncodeRecord(p)
			if err != nil {
				return err
			}
			return b.Put(p.Identity, raw)
		}
		return errors.Join(
			edit("short", func(p *vault.PSK) { p.KeyBits = 64 }),
			edit("selfie", func(p *vault.PSK) { p.ClientNode = "node-a" }),
			edit("grp", func(p *vault.PSK) { p.NodeContext = false }),
			edit("orig", func(p *vault.PSK) { p.Identity, p.ClientNode = []byte("copy"), "node-c" }), // orig's key under a second identity
		)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	a.start()

	out, code := a.run(nil, "check", "--json")
	var rep vault.Report
	if code != 1 || json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &rep) != nil {
		t.Fatalf("check: exit %d: %s", code, out)
	}
	mustRules := map[string][]string{}
	for _, p := range rep.PSKs {
		for _, f := range p.Findings {
			if f.Level == vault.LevelMust {
				mustRules[p.Identity] = append(mustRules[p.Identity], f.Rule)
			}
		}
	}
	want := map[string]string{"short": "key-length", "selfie": "same-node", "grp": "group-accommodation", "orig": "key-reuse", "copy": "key-reuse"}
	for id, rule := range want {
		if !slices.Contains(mustRules[id], rule) {
			t.Errorf("check does not report %s for %s: %v", rule, id, mustRules[id])
		}
	}
	if len(mustRules["good"]) != 0 {
		t.Errorf("check reports MUST violations for the sound record: %v", mustRules["good"])
	}

	// derive: the sound record is served, every flagged one refused with
	// the specific code.
	if out, code := derive("good"); code != 0 {
		t.Fatalf("derive good: exit %d: %s", code, out)
	}
	for id, rule := range want {
		out, code := derive(id)
		if code == 0 || !strings.Contains(out, "violates an RFC 9257 MUST") || !strings.Contains(out, rule) {
			t.Errorf("derive %s (breaks %s): exit %d: %s", id, rule, code, out)
		}
	}
	// lookup: node-a is the server of selfie, grp (from node-b) and orig.
	if st, b := a.http("POST", "/v1/lookup", "application/json", strings.NewReader(`{"identity_hex":"`+wires["good"]+`"}`)); st != http.StatusNotFound {
		t.Fatalf("lookup of good (node-a is its client): %d %s", st, b)
	}
	for _, id := range []string{"selfie", "grp", "orig"} {
		body := `{"identity_hex":"` + wires[id] + `"}`
		if st, b := a.http("POST", "/v1/lookup", "application/json", strings.NewReader(body)); st != http.StatusNotFound || !strings.Contains(string(b), "no_key") {
			t.Errorf("lookup of %s: %d %s", id, st, b)
		}
	}
	// offers: node-a as client offers to node-b only the sound record.
	st, b := a.http("POST", "/v1/offers", "application/json", strings.NewReader(`{"server":"node-b","protocol":"tls1.3","kdf":"sha256"}`))
	var offers struct {
		Offers []struct {
			IdentityHex string `json:"identity_hex"`
		} `json:"offers"`
	}
	if st != http.StatusOK || json.Unmarshal(b, &offers) != nil {
		t.Fatalf("offers: %d", st)
	}
	if len(offers.Offers) != 1 || offers.Offers[0].IdentityHex != hex.EncodeToString([]byte("good")) {
		t.Errorf("offers to node-b: got %+v, want only the sound record", offers.Offers)
	}
	// offers to node-a itself (the client = server record) are empty.
	if st, b := a.http("POST", "/v1/offers", "application/json", strings.NewReader(`{"server":"node-a","protocol":"tls1.3","kdf":"sha256"}`)); st != http.StatusOK || strings.Contains(string(b), "ipskx\":\"") && !strings.Contains(string(b), `"offers":[]`) {
		t.Errorf("offers to node-a: %d", st)
	}
}

// TestRFC9257EntropyCLI: keys that slipped past the entropy check before
// are refused by `psk import` and `psk rotate` alike: a passphrase piped
// through `echo ... | xxd -p` (trailing line break), the progression 00 02
// 04 ... 3e, and SHA-256 of a common password with and without "\n".
func TestRFC9257EntropyCLI(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	prog := make([]byte, 32)
	for i := range prog {
		prog[i] = byte(2 * i)
	}
	hunter2 := sha256.Sum256([]byte("hunter2"))
	passwordLF := sha256.Sum256([]byte("password\n"))
	if out, code := a.run(nil, "psk", "import", "--identity", "base", "--client", "node-a", "--server", "node-b", "--key-file", writeKey(t, testKey(32))); code != 0 {
		t.Fatalf("import: exit %d: %s", code, out)
	}
	for _, c := range []struct {
		name, want string
		key        []byte
	}{
		{"echo | xxd -p", "passphrase-like", []byte("Tr0ub4dor&3 Quixotic-Zebra!\n")},
		{"00 02 .. 3e", "arithmetic progression", prog},
		{"sha256 hunter2", "common passwords", hunter2[:]},
		{"sha256 password LF", "common passwords", passwordLF[:]},
	} {
		f := writeKey(t, c.key)
		for _, args := range [][]string{
			{"psk", "import", "--identity", "weak", "--client", "node-a", "--server", "node-b", "--key-file", f},
			{"psk", "rotate", "--identity", "base", "--new-identity", "weak", "--key-file", f},
		} {
			out, code := a.run(nil, args...)
			if code != 1 || !strings.Contains(out, "looks low-entropy") || !strings.Contains(out, c.want) {
				t.Errorf("%s %s: exit %d: %s", args[1], c.name, code, out)
			}
			if strings.Contains(out, hex.EncodeToString(c.key)) || strings.Contains(out, "hunter2") {
				t.Errorf("%s %s: the output names the key or the password", args[1], c.name)
			}
		}
	}
	if out, code := a.run(nil, "psk", "list"); code != 0 || strings.Contains(out, "weak") {
		t.Fatalf("a refused key was stored: exit %d: %s", code, out)
	}
}
