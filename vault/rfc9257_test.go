package vault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/pskvault/pskvault/backends/soft"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

var bg = context.Background()

func newVault(t *testing.T, node string) *vault.Vault {
	t.Helper()
	dir := t.TempDir() + "/v"
	if err := vault.Init(bg, dir, vault.Config{NodeID: node, Backend: "soft"}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(bg, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func randKey(t testing.TB, n int) []byte {
	t.Helper()
	k := make([]byte, n)
	rand.Read(k)
	return k
}

func pairReq(id string, key []byte) vault.ImportRequest {
	return vault.ImportRequest{Identity: []byte(id), Key: key, Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"}
}

var tls256 = vault.Target{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}

func derive(t *testing.T, v *vault.Vault, r vault.DeriveRequest) *vault.Derived {
	t.Helper()
	d, err := v.Derive(bg, r)
	if err != nil {
		t.Fatalf("derive: %v", err)
	}
	return d
}

func hasRule(fs []vault.Finding, rule, level string) bool {
	for _, f := range fs {
		if f.Rule == rule && (level == "" || f.Level == level) {
			return true
		}
	}
	return false
}

// RFC 9257 section 6 rec. 1: MUST be at least 128 bits long.
func TestRFC9257_Sec6_Rec1_KeyAtLeast128Bits(t *testing.T) {
	v := newVault(t, "node-a")
	_, err := v.Import(bg, pairReq("short", randKey(t, 15)))
	if !errors.Is(err, vault.ErrKeyTooShort) {
		t.Fatalf("15-byte key: got %v, want ErrKeyTooShort", err)
	}
}

// RFC 9257 section 4.2 / section 6 rec. 1: low-entropy keys are refused
// unless explicitly allowed, and then flagged for good.
func TestRFC9257_Sec4_2_LowEntropyRefused(t *testing.T) {
	seq := make([]byte, 32)
	for i := range seq {
		seq[i] = byte(i)
	}
	weak, _ := hex.DecodeString("88f3824b3e5659f52d00e959bacab954b6540344")
	cases := []struct {
		name, want string
		key        []byte
	}{
		{"passphrase", "passphrase-like", []byte("correct horse battery staple")},
		{"hex text as bytes", "passphrase-like", []byte("3f2a9c0d3f2a9c0d11aa22bb33cc44dd")},
		{"zeros", "few distinct bytes", make([]byte, 32)},
		{"repeat", "repeating pattern", bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 8)},
		{"counter", "counting sequence", seq},
		{"published example", "known weak value", weak},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newVault(t, "node-a")
			_, err := v.Import(bg, pairReq("id1", c.key))
			if !errors.Is(err, vault.ErrLowEntropy) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrLowEntropy mentioning %q", err, c.want)
			}
			if strings.Contains(err.Error(), hex.EncodeToString(c.key)) {
				t.Fatal("error contains the key")
			}
			r := pairReq("id1", c.key)
			r.AllowLowEntropy = true
			p, err := v.Import(bg, r)
			if err != nil {
				t.Fatalf("with AllowLowEntropy: %v", err)
			}
			if !p.LowEntropy || len(p.EntropyFindings) != 0 {
				t.Fatal("PSK not flagged LowEntropy, or the detector's finding kept")
			}
			rep := checkAll(t, v)
			if !hasRule(rep.PSKs[0].Findings, "entropy", vault.LevelShould) {
				t.Fatalf("check does not report low entropy: %+v", rep.PSKs[0].Findings)
			}
			for _, f := range rep.PSKs[0].Findings {
				if strings.Contains(f.Message, c.want) {
					t.Fatalf("check reveals which detector fired: %s", f.Message)
				}
			}
		})
	}
	// Random keys pass (1000 draws of each size).
	for _, n := range []int{16, 32, 64} {
		for range 1000 {
			if f := vault.AssessEntropy(randKey(t, n)); len(f) > 0 {
				t.Fatalf("random %d-byte key flagged: %v", n, f)
			}
		}
	}
}

// RFC 9257 section 4.2: the record keeps the key's provenance.
func TestRFC9257_Sec4_2_Provenance(t *testing.T) {
	v := newVault(t, "node-a")
	p, key, err := v.Create(bg, pairReq("gen", nil))
	if err != nil {
		t.Fatal(err)
	}
	clear(key)
	if !strings.HasPrefix(p.Provenance, "generated") || !strings.Contains(p.Provenance, "node node-a") || !strings.Contains(p.Provenance, "soft") {
		t.Fatalf("generated provenance %q", p.Provenance)
	}
	r := pairReq("imp", randKey(t, 32))
	r.Provenance = "key file from peer node-b"
	p, err = v.Import(bg, r)
	if err != nil {
		t.Fatal(err)
	}
	if p.Provenance != "imported on node node-a from key file from peer node-b" {
		t.Fatalf("imported provenance %q", p.Provenance)
	}
}

// RFC 9257 section 6 rec. 1 and section 8: psk_dhe_ke required and no early
// data by default; both carried by Derive; allowing them is reported.
func TestRFC9257_Sec6_Rec1_DHERequiredNoEarlyDataByDefault(t *testing.T) {
	v := newVault(t, "node-a")
	p, err := v.Import(bg, pairReq("dflt", randKey(t, 32)))
	if err != nil {
		t.Fatal(err)
	}
	if p.PSKKE || p.EarlyData {
		t.Fatal("defaults must be DHE required, no early data")
	}
	r := pairReq("lax", randKey(t, 32))
	r.AllowPSKKE, r.AllowEarlyData = true, true
	if _, err := v.Import(bg, r); err != nil {
		t.Fatal(err)
	}
	d := derive(t, v, vault.DeriveRequest{Identity: []byte("lax"), Target: tls256})
	if !d.PSK.PSKKE || !d.PSK.EarlyData {
		t.Fatal("Derive does not carry the key-exchange flags")
	}
	for _, a := range checkAll(t, v).PSKs {
		if a.IdentityHex == hex.EncodeToString([]byte("lax")) {
			if a.DHERequired || !a.EarlyData || !hasRule(a.Findings, "dhe", vault.LevelShould) || !hasRule(a.Findings, "early-data", vault.LevelWarn) {
				t.Fatalf("check row %+v", a)
			}
		} else if !a.DHERequired || a.EarlyData || hasRule(a.Findings, "dhe", "") {
			t.Fatalf("check row %+v", a)
		}
	}
}

// RFC 9257 section 4.1 / section 6 rec. 2: one key, one pair of nodes.
// Reuse is detected with a keyed fingerprint that reveals nothing.
func TestRFC9257_Sec6_Rec2_KeyReuseRefused(t *testing.T) {
	v := newVault(t, "node-a")
	key := randKey(t, 32)
	p, err := v.Import(bg, pairReq("first", key))
	if err != nil {
		t.Fatal(err)
	}
	r := pairReq("second", key)
	r.ClientNode = "node-c"
	r.ServerNode = "node-a"
	_, err = v.Import(bg, r)
	if !errors.Is(err, vault.ErrKeyReused) || !strings.Contains(err.Error(), hex.EncodeToString([]byte("first"))) {
		t.Fatalf("got %v, want ErrKeyReused naming the first PSK", err)
	}
	sum := sha256.Sum256(key)
	if len(p.Fingerprint) == 0 || bytes.Equal(p.Fingerprint, sum[:]) || bytes.Contains(p.Fingerprint, key[:8]) {
		t.Fatal("fingerprint missing or unkeyed")
	}
	// Another vault gives the same key another fingerprint: it is keyed.
	w := newVault(t, "node-b")
	q, err := w.Import(bg, pairReq("first", key))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(q.Fingerprint, p.Fingerprint) {
		t.Fatal("fingerprints equal across vaults: not keyed per vault")
	}
}

// RFC 9258 Appendix A / RFC 9257 section 4.1: the canonical node-identifier
// context, byte for byte.
func TestRFC9257_Sec4_1_NodeContextEncoding(t *testing.T) {
	c, err := vault.NodeContext("node-a", "node-b")
	if err != nil {
		t.Fatal(err)
	}
	want := "11" + hex.EncodeToString([]byte("pskvault nodes v1")) + "06" + hex.EncodeToString([]byte("node-a")) + "06" + hex.EncodeToString([]byte("node-b"))
	if hex.EncodeToString(c) != want {
		t.Fatalf("NodeContext = %x, want %s", c, want)
	}
	cl, sv, err := vault.ParseNodeContext(c)
	if err != nil || cl != "node-a" || sv != "node-b" {
		t.Fatalf("ParseNodeContext = %q %q %v", cl, sv, err)
	}
	for _, bad := range [][]byte{nil, c[:len(c)-1], append(slices.Clone(c), 1, 'x'), {0}} {
		if _, _, err := vault.ParseNodeContext(bad); !errors.Is(err, vault.ErrContext) {
			t.Fatalf("ParseNodeContext(%x) = %v", bad, err)
		}
	}
}

// Both peers of a pairwise PSK with the node context derive the same
// imported PSK without naming the context; a reflected (Selfie) context or
// any other context is refused.
func TestRFC9257_Sec4_1_PairwiseNodeContextBothPeers(t *testing.T) {
	a, b := newVault(t, "node-a"), newVault(t, "node-b")
	key := randKey(t, 32)
	for _, v := range []*vault.Vault{a, b} {
		r := pairReq("pair", key)
		r.NodeContext = true
		if _, err := v.Import(bg, r); err != nil {
			t.Fatal(err)
		}
	}
	da := derive(t, a, vault.DeriveRequest{Identity: []byte("pair"), Target: tls256})
	db := derive(t, b, vault.DeriveRequest{Identity: []byte("pair"), Target: tls256})
	want, _ := vault.NodeContext("node-a", "node-b")
	if !bytes.Equal(da.IPSKX, db.IPSKX) || !bytes.Equal(da.Context, want) || da.Role != "client" || db.Role != "server" {
		t.Fatal("peers disagree on the imported PSK or context")
	}
	selfie, _ := vault.NodeContext("node-b", "node-a")
	if _, err := a.Derive(bg, vault.DeriveRequest{Identity: []byte("pair"), Context: selfie, Target: tls256}); !errors.Is(err, vault.ErrContext) {
		t.Fatalf("reflected context: got %v, want ErrContext", err)
	}
	if _, err := a.Derive(bg, vault.DeriveRequest{Identity: []byte("pair"), Target: tls256, Role: "server"}); !errors.Is(err, vault.ErrNotParty) {
		t.Fatalf("wrong role: got %v, want ErrNotParty", err)
	}
}

// RFC 9257 section 4.1 / section 6 rec. 2: group PSKs only with an explicit
// member list and the node-identifier context; caller and peer must be
// members.
func TestRFC9257_Sec6_Rec2_GroupKeys(t *testing.T) {
	v := newVault(t, "node-a")
	grp := func(id string, members ...string) vault.ImportRequest {
		return vault.ImportRequest{Identity: []byte(id), Key: randKey(t, 32), Hash: importer.SHA256, PolicyRequest: vault.PolicyRequest{Group: members}}
	}
	if _, err := v.Import(bg, grp("g0", "node-a", "node-b")); !errors.Is(err, vault.ErrGroup) {
		t.Fatalf("2-member group: %v", err)
	}
	if _, err := v.Import(bg, grp("g0", "node-b", "node-c", "node-d")); !errors.Is(err, vault.ErrNotParty) {
		t.Fatalf("group without this node: %v", err)
	}
	r := grp("g0", "node-a", "node-b")
	r.ClientNode = "node-a"
	if _, err := v.Import(bg, r); !errors.Is(err, vault.ErrGroup) {
		t.Fatalf("group plus client: %v", err)
	}
	key := randKey(t, 32)
	r = grp("g1", "node-c", "node-a", "node-b")
	r.Key = key
	p, err := v.Import(bg, r)
	if err != nil {
		t.Fatal(err)
	}
	if !p.IsGroup() || !p.NodeContext || !slices.Equal(p.Group, []string{"node-a", "node-b", "node-c"}) {
		t.Fatalf("group record %+v", p.Policy)
	}
	id := []byte("g1")
	if _, err := v.Derive(bg, vault.DeriveRequest{Identity: id, Target: tls256}); !errors.Is(err, vault.ErrGroup) {
		t.Fatalf("no peer: %v", err)
	}
	if _, err := v.Derive(bg, vault.DeriveRequest{Identity: id, Target: tls256, Peer: "node-x", Role: "client"}); !errors.Is(err, vault.ErrGroup) {
		t.Fatalf("peer not a member: %v", err)
	}
	// node-b, serving node-a, derives what node-a derives as client.
	w := newVault(t, "node-b")
	r = grp("g1", "node-a", "node-b", "node-c")
	r.Key = key
	if _, err := w.Import(bg, r); err != nil {
		t.Fatal(err)
	}
	da := derive(t, v, vault.DeriveRequest{Identity: id, Target: tls256, Peer: "node-b", Role: "client"})
	db := derive(t, w, vault.DeriveRequest{Identity: id, Target: tls256, Peer: "node-a", Role: "server"})
	dc := derive(t, v, vault.DeriveRequest{Identity: id, Target: tls256, Peer: "node-c", Role: "client"})
	if !bytes.Equal(da.IPSKX, db.IPSKX) || bytes.Equal(da.IPSKX, dc.IPSKX) {
		t.Fatal("group derivations: same pair must agree, different pairs must differ")
	}
	a := checkAll(t, v).PSKs[0]
	if a.Kind != "group" || !hasRule(a.Findings, "group", vault.LevelWarn) {
		t.Fatalf("group not reported: %+v", a)
	}
}

// RFC 9257 section 6 rec. 3-4: finalize keeps the imported keys and
// destroys the main key; new targets are refused.
func TestRFC9257_Sec6_Rec4_FinalizeDestroysMainKey(t *testing.T) {
	v := newVault(t, "node-a")
	r := pairReq("fin", randKey(t, 32))
	r.Targets = []vault.Target{tls256, {Protocol: importer.DTLS13, KDF: importer.HKDFSHA384}}
	if _, err := v.Import(bg, r); err != nil {
		t.Fatal(err)
	}
	before := derive(t, v, vault.DeriveRequest{Identity: []byte("fin"), Target: tls256})
	p, err := v.Finalize(bg, []byte("fin"), vault.FinalizeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.IsFinalized() || len(p.Handle) != 0 || len(p.Finalized) != 2 {
		t.Fatalf("finalized record: handle %d bytes, %d sealed", len(p.Handle), len(p.Finalized))
	}
	after := derive(t, v, vault.DeriveRequest{Identity: []byte("fin"), Target: tls256})
	if !bytes.Equal(before.IPSKX, after.IPSKX) || !bytes.Equal(before.ImportedIdentity, after.ImportedIdentity) {
		t.Fatal("finalized key differs from the one derived before")
	}
	_, err = v.Derive(bg, vault.DeriveRequest{Identity: []byte("fin"), Context: []byte("new"), Target: tls256})
	if !errors.Is(err, vault.ErrFinalized) || !strings.Contains(err.Error(), "tls1.3/sha256 with empty context") {
		t.Fatalf("new context after finalize: %v", err)
	}
	if _, err := v.Finalize(bg, []byte("fin"), vault.FinalizeRequest{}); !errors.Is(err, vault.ErrFinalized) {
		t.Fatalf("second finalize: %v", err)
	}
	if a := checkAll(t, v).PSKs[0]; !a.Finalized || hasRule(a.Findings, "main-key", "") {
		t.Fatalf("check after finalize: %+v", a)
	}
	// Created finalized in one step.
	r = pairReq("fin2", nil)
	r.Finalize, r.NodeContext = true, true
	p, key, err := v.Create(bg, r)
	if err != nil {
		t.Fatal(err)
	}
	clear(key)
	if !p.IsFinalized() || len(p.Finalized) != len(vault.AllTargets) {
		t.Fatal("create --finalize did not finalize")
	}
	derive(t, v, vault.DeriveRequest{Identity: []byte("fin2"), Target: tls256})
}

// RFC 9257 section 6.1.1: identity rules (documented in CheckIdentity).
func TestRFC9257_Sec6_1_1_IdentityRules(t *testing.T) {
	cases := []struct {
		name, id, rule string
		refused        bool // refused unless AllowIdentityWarnings
		always         bool // refused even with AllowIdentityWarnings
	}{
		{"not NFC", "cafe\u0301", "identity-nfc", true, false},
		{"zero-width space", "node\u200ba", "identity-invisible", true, false},
		{"leading space", " node", "identity-space", true, false},
		{"trailing space", "node ", "identity-space", true, false},
		{"control", "node\x07", "identity-control", true, true},
		{"mixed scripts", "nodeΩmega", "identity-mixed-scripts", false, false},
		{"hostname", "server1.example.com", "identity-privacy", false, false},
		{"MAC", "dev-00:1a:2b:3c:4d:5e", "identity-privacy", false, false},
		{"e-mail", "alice@example.org", "identity-privacy", false, false},
		{"IPv4", "psk-192.0.2.7", "identity-privacy", false, false},
		{"IPv6", "psk 2001:db8::1", "identity-privacy", false, false},
		{"binary", "\xff\xfe\x00\x01", "identity-binary", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newVault(t, "node-a")
			p, err := v.Import(bg, pairReq(c.id, randKey(t, 32)))
			if c.refused {
				if !errors.Is(err, vault.ErrIdentity) || !strings.Contains(err.Error(), "RFC 9257 section") {
					t.Fatalf("got %v, want ErrIdentity", err)
				}
				r := pairReq(c.id, randKey(t, 32))
				r.AllowIdentityWarnings = true
				p, err = v.Import(bg, r)
				if c.always {
					if !errors.Is(err, vault.ErrIdentity) {
						t.Fatalf("waived: got %v, want ErrIdentity", err)
					}
					return
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.rule != "identity-binary" && !hasRule(p.IdentityFindings, c.rule, "") {
				t.Fatalf("findings %+v lack %s", p.IdentityFindings, c.rule)
			}
		})
	}
	v := newVault(t, "node-a")
	if p, err := v.Import(bg, pairReq("plain-id-7", randKey(t, 32))); err != nil || len(p.IdentityFindings) != 0 {
		t.Fatalf("plain identity: %v %+v", err, p)
	}
}

// Identity collisions: an identity confusable with one already held is
// refused (RFC 9257 section 6.1.1); the vault's random identities are
// unique and have a recognisable shape (docs/RFC9257.md, section 6.1.2,
// says why that does not by itself keep them apart from resumption
// identities).
func TestRFC9257_Sec6_1_2_IdentityCollisions(t *testing.T) {
	v := newVault(t, "node-a")
	if _, err := v.Import(bg, pairReq("paypal", randKey(t, 32))); err != nil {
		t.Fatal(err)
	}
	r := pairReq("p\u0430ypal", randKey(t, 32)) // Cyrillic a
	r.AllowIdentityWarnings = true
	if _, err := v.Import(bg, r); !errors.Is(err, vault.ErrIdentity) || !strings.Contains(err.Error(), "confusable") {
		t.Fatalf("confusable identity: %v", err)
	}
	r = pairReq("", randKey(t, 32))
	r.Identity, r.RandomIdentity = nil, true
	p, err := v.Import(bg, r)
	if err != nil {
		t.Fatal(err)
	}
	if !vault.IsRandomIdentity(p.Identity) || !p.RandomIdentity || len(p.Identity) != 32 || !strings.HasPrefix(string(p.Identity), vault.RandomIdentityPrefix) {
		t.Fatalf("random identity %q", p.Identity)
	}
	r = pairReq("x", randKey(t, 32))
	r.RandomIdentity = true
	if _, err := v.Import(bg, r); !errors.Is(err, vault.ErrInvalid) {
		t.Fatalf("identity plus random: %v", err)
	}
}

// RFC 9257 section 4.2: expiry, revocation, rotation with overlap.
func TestRFC9257_Sec4_2_Lifecycle(t *testing.T) {
	v := newVault(t, "node-a")
	now := time.Now()
	vault.SetNow(v, func() time.Time { return now })
	r := pairReq("", nil)
	r.Identity, r.RandomIdentity, r.NotAfter = nil, true, now.Add(30*24*time.Hour)
	old, key, err := v.Create(bg, r)
	if err != nil {
		t.Fatal(err)
	}
	clear(key)
	n, key, err := v.Rotate(bg, old.Identity, vault.RotateRequest{Overlap: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	clear(key)
	if n.Generation != 2 || !bytes.Equal(n.RotatedFrom, old.Identity) || !vault.IsRandomIdentity(n.Identity) {
		t.Fatalf("new generation %+v", n.Policy)
	}
	got, _ := v.Get(old.Identity)
	if !bytes.Equal(got.RotatedTo, n.Identity) || !got.NotAfter.Equal(now.Add(24*time.Hour).UTC().Truncate(time.Second)) {
		t.Fatalf("old generation not scheduled to expire: %v", got.NotAfter)
	}
	// Inside the overlap both derive; after it only the new one.
	derive(t, v, vault.DeriveRequest{Identity: old.Identity, Target: tls256})
	derive(t, v, vault.DeriveRequest{Identity: n.Identity, Target: tls256})
	now = now.Add(25 * time.Hour)
	if _, err := v.Derive(bg, vault.DeriveRequest{Identity: old.Identity, Target: tls256}); !errors.Is(err, vault.ErrExpired) {
		t.Fatalf("old generation after overlap: %v", err)
	}
	derive(t, v, vault.DeriveRequest{Identity: n.Identity, Target: tls256})
	if _, _, err := v.Rotate(bg, old.Identity, vault.RotateRequest{}); !errors.Is(err, vault.ErrExpired) {
		t.Fatalf("rotate expired: %v", err)
	}
	// Sweep destroys the expired generation's key, keeps the record.
	swept, err := v.Sweep(bg)
	if err != nil || len(swept) != 1 || !bytes.Equal(swept[0], old.Identity) {
		t.Fatalf("sweep: %x %v", swept, err)
	}
	if got, _ := v.Get(old.Identity); got.State != vault.StateRevoked || len(got.Handle) != 0 || !strings.HasPrefix(got.RevokeReason, "expired at ") {
		t.Fatalf("swept record: %s %q", got.State, got.RevokeReason)
	}
	// Revocation is immediate and permanent.
	p, err := v.Revoke(bg, n.Identity, "node-b compromised")
	if err != nil {
		t.Fatal(err)
	}
	if p.State != vault.StateRevoked || len(p.Handle) != 0 {
		t.Fatal("revoked record keeps its key")
	}
	if _, err := v.Derive(bg, vault.DeriveRequest{Identity: n.Identity, Target: tls256}); !errors.Is(err, vault.ErrRevoked) {
		t.Fatalf("derive revoked: %v", err)
	}
	if _, err := v.Revoke(bg, n.Identity, ""); !errors.Is(err, vault.ErrRevoked) {
		t.Fatalf("revoke twice: %v", err)
	}
	if a := checkAll(t, v); !hasRule(a.PSKs[0].Findings, "revoked", "") && !hasRule(a.PSKs[1].Findings, "revoked", "") {
		t.Fatal("check does not report the revocation")
	}
}

// `check`: a clean vault passes; one that breaks a MUST fails.
func TestRFC9257_Check(t *testing.T) {
	v := newVault(t, "node-a")
	r := pairReq("clean", nil)
	r.NodeContext, r.Finalize, r.NotAfter = true, true, time.Now().Add(time.Hour)
	if _, key, err := v.Create(bg, r); err != nil {
		t.Fatal(err)
	} else {
		clear(key)
	}
	rep := checkAll(t, v)
	if !rep.OK() || rep.Should != 0 || rep.Warn != 0 {
		t.Fatalf("clean vault: %+v", rep)
	}
	p, _ := v.Get([]byte("clean"))
	bad := *p
	bad.Identity, bad.KeyBits = []byte("tampered"), 64
	if err := vault.PutRecord(v, &bad); err != nil {
		t.Fatal(err)
	}
	rep = checkAll(t, v)
	if rep.OK() || rep.Must < 3 { // key length, and key reuse on both records
		t.Fatalf("tampered vault: %d MUST violations, want >= 3: %+v", rep.Must, rep)
	}
	// What check calls a MUST violation is not served: neither record.
	ctx, _ := vault.NodeContext("node-a", "node-b")
	for _, id := range []string{"clean", "tampered"} {
		if _, err := v.Derive(bg, vault.DeriveRequest{Identity: []byte(id), Context: ctx, Target: tls256}); !errors.Is(err, vault.ErrMustViolation) {
			t.Fatalf("derive %s from a vault breaking a MUST: %v, want ErrMustViolation", id, err)
		}
	}
	// Revoking the copy ends the reuse (the fingerprint index follows the
	// record): the original is served again and check passes.
	if _, err := v.Revoke(bg, []byte("tampered"), "test"); err != nil {
		t.Fatal(err)
	}
	if d, err := v.Derive(bg, vault.DeriveRequest{Identity: []byte("clean"), Context: ctx, Target: tls256}); err != nil {
		t.Fatalf("derive clean after the copy was revoked: %v", err)
	} else {
		clear(d.IPSKX)
	}
	if rep = checkAll(t, v); !rep.OK() {
		t.Fatalf("after revoking the copy: %+v", rep)
	}
}

// RFC 9257 section 6.1: stack interfaces limit identities and keys.
func TestRFC9257_Sec6_1_StackProfiles(t *testing.T) {
	v := newVault(t, "node-a")
	r := pairReq("stack-ok", randKey(t, 32))
	r.Stack, r.Targets = "mbedtls", []vault.Target{tls256}
	if _, err := v.Import(bg, r); err != nil {
		t.Fatal(err)
	}
	r = pairReq("stack-384", randKey(t, 32))
	r.Stack = "mbedtls" // all targets, SHA-384 ones give 48-byte keys
	if _, err := v.Import(bg, r); !errors.Is(err, vault.ErrStackLimit) || !strings.Contains(err.Error(), "48-byte key, mbedtls takes at most 32") {
		t.Fatalf("mbedtls sha384: %v", err)
	}
	r = pairReq(strings.Repeat("i", 121), randKey(t, 32))
	r.Stack, r.Targets = "boringssl", []vault.Target{tls256}
	if _, err := v.Import(bg, r); !errors.Is(err, vault.ErrStackLimit) || !strings.Contains(err.Error(), "imported identity is 129 bytes, boringssl takes at most 128") {
		t.Fatalf("boringssl long identity: %v", err)
	}
	r = pairReq("stack-openssl", randKey(t, 32))
	r.Stack, r.Targets = "openssl", []vault.Target{{Protocol: importer.TLS13, KDF: importer.HKDFSHA384}}
	if _, err := v.Import(bg, r); !errors.Is(err, vault.ErrStackLimit) {
		t.Fatalf("openssl sha384: %v", err)
	}
	r.Stack = "nss"
	if _, err := v.Import(bg, r); !errors.Is(err, vault.ErrInvalid) {
		t.Fatalf("unknown stack: %v", err)
	}
}

// A TLS server that only has the received ImportedIdentity (lookup) can
// derive a group PSK: the node context names both ends.
func TestRFC9257_Sec4_1_GroupLookupFromNodeContext(t *testing.T) {
	v := newVault(t, "node-b")
	r := vault.ImportRequest{Identity: []byte("grp"), Key: randKey(t, 32), Hash: importer.SHA256, PolicyRequest: vault.PolicyRequest{Group: []string{"node-a", "node-b", "node-c"}}}
	if _, err := v.Import(bg, r); err != nil {
		t.Fatal(err)
	}
	c, _ := vault.NodeContext("node-a", "node-b")
	d := derive(t, v, vault.DeriveRequest{Identity: []byte("grp"), Context: c, Target: tls256})
	if d.Role != "server" {
		t.Fatalf("role %s", d.Role)
	}
	x, _ := vault.NodeContext("node-a", "node-c")
	if _, err := v.Derive(bg, vault.DeriveRequest{Identity: []byte("grp"), Context: x, Target: tls256}); !errors.Is(err, vault.ErrGroup) {
		t.Fatalf("context between two other members: %v", err)
	}
}

// RFC 9257 section 6.1.1 (not 6.1.2, which is about resumption identities)
// is the section behind the confusable-identity rule, in the refusal and in
// check; importer_only is true for a PSK that can be derived and false
// once it is revoked.
func TestRFC9257_Sec6_1_IdentitySectionsAndImporterOnly(t *testing.T) {
	if _, err := vault.CheckIdentity([]byte("p\u0430ypal"), [][]byte{[]byte("paypal")}, true); !errors.Is(err, vault.ErrIdentity) || !strings.Contains(err.Error(), "section 6.1.1") || strings.Contains(err.Error(), "6.1.2") {
		t.Fatalf("confusable identity: %v, want a refusal citing section 6.1.1 only", err)
	}
	v := newVault(t, "node-a")
	p, err := v.Import(bg, pairReq("paypal", randKey(t, 32)))
	if err != nil {
		t.Fatal(err)
	}
	// A confusable pair written behind the vault's back: check re-checks
	// identities against the whole vault.
	q := *p
	q.Identity, q.Fingerprint = []byte("p\u0430ypal"), nil
	if err := vault.PutRecord(v, &q); err != nil {
		t.Fatal(err)
	}
	rep := checkAll(t, v)
	found := false
	for _, a := range rep.PSKs {
		if !a.ImporterOnly {
			t.Errorf("%s: importer_only false for an active PSK", a.IdentityHex)
		}
		for _, f := range a.Findings {
			if f.Rule == "identity" {
				found = true
				if f.Section != "6.1.1" || strings.Contains(f.Message, "6.1.2") {
					t.Errorf("identity finding cites %s: %s", f.Section, f.Message)
				}
			}
		}
	}
	if !found {
		t.Fatalf("check does not report the confusable pair: %+v", rep.PSKs)
	}
	if _, err := v.Revoke(bg, p.Identity, "test"); err != nil {
		t.Fatal(err)
	}
	for _, a := range checkAll(t, v).PSKs {
		if a.Identity == "paypal" && a.ImporterOnly {
			t.Error("importer_only true for a revoked PSK, which hands nothing out")
		}
	}
}
