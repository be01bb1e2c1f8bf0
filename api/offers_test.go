package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// unixHTTP is an HTTP client for the daemon's socket at sock.
func unixHTTP(sock string) *http.Client {
	return &http.Client{Timeout: 70 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
}

// TestOffersNewestGenerationFirstWithPolicy: after a rotation the offers
// answer lists the new generation first (a client taking the first offer
// moves to it at once) and the old one after it until its overlap ends;
// every offer carries the policy fields of a derive answer and the
// generation.
func TestOffersNewestGenerationFirstWithPolicy(t *testing.T) {
	ctx := context.Background()
	v := testVault(t)
	// g1 sorts before g2 by identity: only the generation order puts g2 first.
	weak := []byte("correct horse battery staple, fine")
	if _, err := v.Import(ctx, vault.ImportRequest{Identity: []byte("g1"), Key: weak, Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-c",
		Targets:       []vault.Target{{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}},
		PolicyRequest: vault.PolicyRequest{AllowLowEntropy: true, AllowEarlyData: true}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Rotate(ctx, []byte("g1"), vault.RotateRequest{NewIdentity: []byte("g2"), Overlap: time.Hour}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ss, _, err := NewServerWith(v, Options{}).Serve(l, SocketData)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	resp, err := unixHTTP(sock).Post("http://pskvault/v1/offers", "application/json",
		bytes.NewReader([]byte(`{"server":"node-c","protocol":"tls1.3","kdf":"sha256"}`)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Offers []map[string]any `json:"offers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	// (testVault's "fz" is for node-b.)
	if len(out.Offers) != 2 {
		t.Fatalf("got %d offers, want 2", len(out.Offers))
	}
	want := []struct {
		id       string
		gen      float64
		low, any bool
	}{{"6732", 2, false, true}, {"6731", 1, true, true}}
	for i, w := range want {
		o := out.Offers[i]
		if o["identity_hex"] != w.id || o["generation"] != w.gen {
			t.Fatalf("offer %d: identity %v generation %v, want %s generation %v", i, o["identity_hex"], o["generation"], w.id, w.gen)
		}
		if o["psk_dhe_ke_required"] != true || o["kind"] != "pairwise" || o["protocol"] != "tls1.3" || o["kdf"] != "sha256" {
			t.Errorf("offer %d lacks the derive answer's policy fields: psk_dhe_ke_required=%v kind=%v protocol=%v kdf=%v", i, o["psk_dhe_ke_required"], o["kind"], o["protocol"], o["kdf"])
		}
		if o["early_data_allowed"] != w.any {
			t.Errorf("offer %d: early_data_allowed %v, want %v", i, o["early_data_allowed"], w.any)
		}
		if (o["low_entropy"] == true) != w.low {
			t.Errorf("offer %d: low_entropy %v, want %v", i, o["low_entropy"], w.low)
		}
		if _, ok := o["context_hex"]; !ok {
			t.Errorf("offer %d has no context_hex", i)
		}
	}
	// The binary form: the same order and the same policy.
	req, _ := http.NewRequest(http.MethodPost, "http://pskvault/v1/offers", bytes.NewReader(BinRequest{Node: "node-c", Protocol: 0x0304, KDF: 1}.Marshal()))
	req.Header.Set("Content-Type", ContentTypeTLV)
	req.Header.Set("Accept", ContentTypeTLV)
	bresp, err := unixHTTP(sock).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer bresp.Body.Close()
	var raw bytes.Buffer
	raw.ReadFrom(bresp.Body)
	bins, err := ParseBinOffers(raw.Bytes())
	if err != nil || len(bins) != 2 {
		t.Fatalf("binary offers: %v, %d offers", err, len(bins))
	}
	for i, w := range []struct {
		id    string
		gen   uint32
		flags uint32
	}{{"g2", 2, FlagDHERequired | FlagEarlyData}, {"g1", 1, FlagDHERequired | FlagEarlyData | FlagLowEntropy}} {
		if string(bins[i].Identity) != w.id || bins[i].Generation != w.gen || bins[i].Flags != w.flags {
			t.Errorf("binary offer %d: %q generation %d flags %b, want %q %d %b", i, bins[i].Identity, bins[i].Generation, bins[i].Flags, w.id, w.gen, w.flags)
		}
	}
}
