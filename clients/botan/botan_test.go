package botan

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// field returns the value of "name=VALUE" in a line of space-separated pairs.
func field(line, name string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v
		}
	}
	return ""
}

// TestImportedIdentityMatchesNativeImporters: the ImportedIdentity pskvault
// puts on the wire is byte for byte what GnuTLS 3.8's
// gnutls_psk_format_imported_identity serializes, and the ImportedIdentity
// and ipskx are what Botan's own importer (Botan::TLS::PSKImporter) derives
// from the EPSK, for text and binary identities, empty, short and long
// contexts, SHA-256 and SHA-384 EPSKs, and both target KDFs.
func TestImportedIdentityMatchesNativeImporters(t *testing.T) {
	requireEnv(t)
	long := randBytes(t, 200)
	cases := []struct {
		name      string
		identity  []byte
		context   []byte
		hash, kdf string
	}{
		{"text-empty-context", []byte("tls-a-b"), nil, "sha256", "sha256"},
		{"text-sha384-target", []byte("web-1.example"), []byte{1, 2}, "sha256", "sha384"},
		{"binary-long-context", []byte{0x00, 0xff, 0x10, 0x00}, randBytes(t, 300), "sha256", "sha256"},
		{"binary-sha384-epsk", []byte{0x00, 0x01, 0xff}, []byte("pskvault:node-a>node-b"), "sha384", "sha384"},
		{"sha384-epsk-sha256-target", []byte{0xca, 0xfe}, []byte{0xde, 0xad, 0xbe, 0xef}, "sha384", "sha256"},
		{"one-byte-identity", []byte{0x42}, nil, "sha256", "sha384"},
		{"long-identity", long, []byte{0}, "sha384", "sha384"},
	}
	p := newPair(t, []byte("unused"))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p.addPSK(t, c.identity, "--hash", c.hash)
			d := p.b.derive(c.identity, c.context, c.kdf)
			args := []string{"--identity-hex", hex.EncodeToString(c.identity), "--context-hex", hex.EncodeToString(c.context), "--kdf", c.kdf}

			out, err := run(t, prog("gnutls-native"), append([]string{"format"}, args...)...)
			if err != nil {
				t.Fatalf("gnutls-native format: %v\n%s", err, out)
			}
			gnutls := unhexT(t, strings.TrimSpace(out))
			if !bytes.Equal(gnutls, d.ImportedIdentity) {
				t.Errorf("ImportedIdentity: pskvault %x, gnutls_psk_format_imported_identity %x", d.ImportedIdentity, gnutls)
			}

			out, err = run(t, prog("pskvault-botan-tool"), append([]string{"import", "--import-epsk", p.epsk, "--epsk-hash", c.hash}, args...)...)
			if err != nil {
				t.Fatalf("Botan importer: %v", err) // out holds the key: not printed
			}
			botanID := unhexT(t, field(out, "imported_identity"))
			botanKey := unhexT(t, field(out, "ipskx"))
			if !bytes.Equal(botanID, d.ImportedIdentity) {
				t.Errorf("ImportedIdentity: pskvault %x, Botan::TLS::PSKImporter %x", d.ImportedIdentity, botanID)
			}
			if !bytes.Equal(botanKey, d.IPSKX) || len(d.IPSKX) != map[string]int{"sha256": 32, "sha384": 48}[c.kdf] {
				t.Errorf("ipskx: pskvault and Botan::TLS::PSKImporter: mismatch")
			}
			clear(botanKey)
			clear(d.IPSKX)
		})
	}
}

func unhexT(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) == 0 {
		if t == nil {
			panic(fmt.Sprintf("not hex: %q", s))
		}
		t.Helper()
		t.Fatalf("not hex: %q", s)
	}
	return b
}

// interopCase is one PSK and target the handshake tests run with.
type interopCase struct {
	name       string
	identity   []byte
	createArgs []string
	context    func(p *pair) []byte // the importer context both sides use
	kdf        string
	hash       string
}

// The PSK's EPSK hash equals the target KDF's hash in every case: GnuTLS 3.8
// runs the importer's HKDF with the target KDF's hash (see
// TestGnuTLSImporterHashDeviation).
var interopCases = []interopCase{
	{
		name: "sha256-text-identity-node-context", identity: []byte("tls-a-b"),
		createArgs: []string{"--node-context"}, kdf: "sha256", hash: "sha256",
		context: func(p *pair) []byte { return unhexT(nil, p.a.derive(p.identity, nil, "sha256").Response.ContextHex) },
	},
	{
		name: "sha384-binary-identity-context", identity: []byte{0x00, 0xff, 0x01, 0x00, 0x80},
		createArgs: []string{"--hash", "sha384"}, kdf: "sha384", hash: "sha384",
		context: func(p *pair) []byte { return []byte("edge-7|origin-3") },
	},
}

// TestGnuTLSNativeClientBotanServer: GnuTLS 3.8 importing the EPSK itself
// completes TLS 1.3 with the pskvault-fed Botan server, which holds only the
// ipskx its vault derived; data crosses; the server saw the ImportedIdentity
// on the wire. After revoke on the server's node the next handshake fails,
// the server still running.
func TestGnuTLSNativeClientBotanServer(t *testing.T) {
	requireEnv(t)
	for _, c := range interopCases {
		t.Run(c.name, func(t *testing.T) {
			p := newPair(t, c.identity, c.createArgs...)
			ctx := c.context(p)
			want := p.b.derive(c.identity, ctx, c.kdf).ImportedIdentity
			srv, port := listening(t, prog("pskvault-botan-echo-server"), "--data-socket", p.b.inData, "--kdf", c.kdf)
			native := []string{"client", "--identity-hex", hex.EncodeToString(c.identity), "--context-hex", hex.EncodeToString(ctx),
				"--kdf", c.kdf, "--epsk-file", p.epsk, "--port", port}

			msg := "ping-" + hex.EncodeToString(randBytes(t, 4))
			out, err := run(t, prog("gnutls-native"), append(native, "--message", msg)...)
			if err != nil || !strings.Contains(out, "reply: "+msg) {
				t.Fatalf("GnuTLS native client -> Botan server: %v\n%s\nserver:\n%s", err, out, srv.out.String())
			}
			l, ok := srv.waitFor("handshake ok:", 10*time.Second)
			if !ok || field(l, "identity") != hex.EncodeToString(want) {
				t.Fatalf("server: want handshake ok with identity %x, got %q\n%s", want, l, srv.out.String())
			}
			if !strings.Contains(out, "ECDHE-PSK") && !strings.Contains(out, "DHE-PSK") {
				t.Errorf("not a psk_dhe_ke handshake: %s", out)
			}
			if _, ok := srv.waitFor("received: "+msg, 10*time.Second); !ok {
				t.Fatalf("server did not receive the data:\n%s", srv.out.String())
			}

			p.b.cli("psk", "revoke", "--identity-hex", hex.EncodeToString(c.identity), "--reason", "test")
			out, err = run(t, prog("gnutls-native"), append(native, "--message", "after-revoke")...)
			if err == nil || strings.Contains(out, "reply:") {
				t.Fatalf("handshake after revoke on the server's node succeeded:\n%s", out)
			}
			if _, ok := srv.waitFor("handshake failed:", 10*time.Second); !ok {
				t.Fatalf("server did not report the failed handshake:\n%s", srv.out.String())
			}
			select {
			case <-srv.done:
				t.Fatalf("server exited:\n%s", srv.out.String())
			default:
			}
		})
	}
}

// TestBotanClientGnuTLSNativeServer: the pskvault-fed Botan client (offers
// for server node-b from node-a's vault) completes TLS 1.3 with GnuTLS 3.8
// importing the EPSK itself; the GnuTLS server received exactly the
// ImportedIdentity it serializes. After revoke on the client's node the next
// handshake fails.
func TestBotanClientGnuTLSNativeServer(t *testing.T) {
	requireEnv(t)
	for _, c := range interopCases {
		t.Run(c.name, func(t *testing.T) {
			p := newPair(t, c.identity, c.createArgs...)
			ctx := c.context(p)
			srv, port := listening(t, prog("gnutls-native"), "server", "--identity-hex", hex.EncodeToString(c.identity),
				"--context-hex", hex.EncodeToString(ctx), "--kdf", c.kdf, "--epsk-file", p.epsk, "--naccept", "2")
			botan := []string{"--data-socket", p.a.inData, "--connect", "127.0.0.1:" + port, "--server-node", "node-b", "--kdf", c.kdf}
			if c.createArgs[0] != "--node-context" {
				botan = append(botan, "--context-hex", hex.EncodeToString(ctx))
			}
			msg := "ping-" + hex.EncodeToString(randBytes(t, 4))
			out, err := run(t, prog("pskvault-botan-client"), append(botan, "--message", msg)...)
			if err != nil || !strings.Contains(out, "reply: "+msg) {
				t.Fatalf("Botan client -> GnuTLS native server: %v\n%s\nserver:\n%s", err, out, srv.out.String())
			}
			want := p.a.derive(c.identity, ctx, c.kdf).ImportedIdentity
			l, ok := srv.waitFor("handshake ok:", 10*time.Second)
			if !ok || field(l, "identity") != hex.EncodeToString(want) {
				t.Fatalf("GnuTLS server: want identity %x, got %q\n%s", want, l, srv.out.String())
			}

			p.a.cli("psk", "revoke", "--identity-hex", hex.EncodeToString(c.identity), "--reason", "test")
			out, err = run(t, prog("pskvault-botan-client"), append(botan, "--message", "after-revoke")...)
			if err == nil || strings.Contains(out, "reply:") || !strings.Contains(out, "handshake failed") {
				t.Fatalf("handshake after revoke on the client's node: err=%v\n%s", err, out)
			}
		})
	}
}

// TestNativeImporterMeetsExtBinder: a pskvault-fed endpoint that hands the
// ipskx to its stack as an ordinary external PSK ("ext binder", what OpenSSL
// and GnuTLS 3.7 consumers do) never completes a handshake with a native
// importer, and it is the binder that fails: the identity is found and the
// key handed over (the vault's audit log shows the lookup succeeded, GnuTLS
// says it matched the identity), and then the binder check refuses. The same
// peers with the key handed over as imported complete the handshake.
func TestNativeImporterMeetsExtBinder(t *testing.T) {
	requireEnv(t)
	c := interopCases[0]
	p := newPair(t, c.identity, c.createArgs...)
	ctx := c.context(p)
	wire := p.b.derive(c.identity, ctx, c.kdf).ImportedIdentity
	native := []string{"--identity-hex", hex.EncodeToString(c.identity), "--context-hex", hex.EncodeToString(ctx),
		"--kdf", c.kdf, "--epsk-file", p.epsk}

	t.Run("native-client-ext-binder-server", func(t *testing.T) {
		srv, port := listening(t, prog("pskvault-botan-echo-server"), "--data-socket", p.b.inData, "--kdf", c.kdf, "--ext-binder")
		out, err := run(t, prog("gnutls-native"), append([]string{"client", "--port", port, "--message", "x"}, native...)...)
		if err == nil || strings.Contains(out, "reply:") {
			t.Fatalf("GnuTLS native client completed a handshake with an ext-binder server:\n%s", out)
		}
		l, ok := srv.waitFor("handshake failed:", 10*time.Second)
		if !ok || !strings.Contains(l, "PSK binder does not check out") {
			t.Fatalf("server: want the binder refused, got %q\n%s", l, srv.out.String())
		}
		if !p.b.auditHas(`"op":"lookup"`, `"result":"ok"`, `"identity":"`+hex.EncodeToString(c.identity)+`"`) {
			t.Fatal("the vault's audit log has no successful lookup for the identity: the failure was not the binder's")
		}
		t.Logf("ext-binder server: %s; GnuTLS client: %s", l, strings.TrimSpace(out))
	})

	t.Run("ext-binder-client-native-server", func(t *testing.T) {
		srv, port := listening(t, prog("gnutls-native"), append([]string{"server", "--naccept", "1", "--debug", "3"}, native...)...)
		out, err := run(t, prog("pskvault-botan-client"), "--data-socket", p.a.inData, "--connect", "127.0.0.1:"+port,
			"--server-node", "node-b", "--kdf", c.kdf, "--ext-binder", "--message", "x")
		if err == nil || strings.Contains(out, "reply:") {
			t.Fatalf("ext-binder client completed a handshake with a native importer:\n%s", out)
		}
		if _, ok := srv.waitFor("identity matched: "+hex.EncodeToString(wire), 10*time.Second); !ok {
			t.Fatalf("GnuTLS did not match the identity (so the binder was never reached):\n%s", srv.out.String())
		}
		l, ok := srv.waitFor("handshake failed:", 10*time.Second)
		if !ok || !strings.Contains(l, "-55 ") {
			t.Fatalf("GnuTLS server: want GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER (-55, its binder mismatch), got %q\n%s", l, srv.out.String())
		}
		// GnuTLS logs no text for a binder mismatch, only the assertion in
		// server_recv_params (lib/ext/pre_shared_key.c) after the compare.
		if !strings.Contains(srv.out.String(), "pre_shared_key.c[server_recv_params]") {
			t.Fatalf("GnuTLS's log shows no failure in server_recv_params:\n%s", srv.out.String())
		}
		t.Logf("native server: %s; ext-binder client: %s", l, strings.TrimSpace(out))
	})

	// The same with the C library's OpenSSL glue (Debian 12's OpenSSL 3.0
	// on the host): the ext-binder consumer pskvault ships.
	t.Run("native-client-openssl-fed-server", func(t *testing.T) {
		dir := hostCLib(t)
		srv, addr := hostServer(t, "listening", func(addr string) *proc {
			return spawnHost(t, 2*time.Minute, filepath.Join(dir, "ossl_echo_server"), "--socket", p.b.data, "--listen", addr, "--count", "1")
		})
		port := addr[strings.LastIndexByte(addr, ':')+1:]
		out, err := run(t, prog("gnutls-native"), append([]string{"client", "--port", port, "--message", "x"}, native...)...)
		if err == nil || strings.Contains(out, "reply:") {
			t.Fatalf("GnuTLS native client completed a handshake with the OpenSSL-fed server:\n%s", out)
		}
		if _, ok := srv.waitFor("lookup identity="+hex.EncodeToString(wire)+" status=ok", 10*time.Second); !ok {
			t.Fatalf("the OpenSSL-fed server did not get the key for the identity (so the binder was never reached):\n%s", srv.out.String())
		}
		l, ok := srv.waitFor("handshake failed:", 10*time.Second)
		if !ok || !strings.Contains(l, "binder") {
			t.Fatalf("OpenSSL server: want its binder error, got %q\n%s", l, srv.out.String())
		}
		t.Logf("OpenSSL-fed server: %s; GnuTLS client: %s", l, strings.TrimSpace(out))
	})

	t.Run("openssl-fed-client-native-server", func(t *testing.T) {
		dir := hostCLib(t)
		srv, port := listening(t, prog("gnutls-native"), append([]string{"server", "--naccept", "1", "--debug", "3"}, native...)...)
		cmd := spawnHost(t, time.Minute, filepath.Join(dir, "ossl_echo_client"), "--socket", p.a.data, "--connect", "127.0.0.1:"+port,
			"--peer", "node-b", "--message", "x")
		<-cmd.done
		if cmd.err == nil || strings.Contains(cmd.out.String(), "echo: x") {
			t.Fatalf("OpenSSL-fed client completed a handshake with a native importer:\n%s", cmd.out.String())
		}
		if _, ok := srv.waitFor("identity matched: "+hex.EncodeToString(wire), 10*time.Second); !ok {
			t.Fatalf("GnuTLS did not match the identity the OpenSSL-fed client sent:\n%s\nclient:\n%s", srv.out.String(), cmd.out.String())
		}
		l, ok := srv.waitFor("handshake failed:", 10*time.Second)
		if !ok || !strings.Contains(l, "-55 ") || !strings.Contains(srv.out.String(), "pre_shared_key.c[server_recv_params]") {
			t.Fatalf("GnuTLS server: want -55 from server_recv_params (binder mismatch), got %q\n%s", l, srv.out.String())
		}
		t.Logf("native server: %s; OpenSSL-fed client: %s", l, strings.TrimSpace(cmd.out.String()))
	})

	t.Run("control-imported-binder", func(t *testing.T) {
		srv, port := listening(t, prog("gnutls-native"), append([]string{"server", "--naccept", "1"}, native...)...)
		out, err := run(t, prog("pskvault-botan-client"), "--data-socket", p.a.inData, "--connect", "127.0.0.1:"+port,
			"--server-node", "node-b", "--kdf", c.kdf, "--message", "same-key-imp-binder")
		if err != nil || !strings.Contains(out, "reply: same-key-imp-binder") {
			t.Fatalf("imp-binder control failed: %v\n%s\n%s", err, out, srv.out.String())
		}
	})
}

// TestGnuTLSImporterHashDeviation pins down where GnuTLS 3.8 and RFC 9258
// part: with a SHA-256 EPSK imported for a SHA-384 target, RFC 9258 section
// 5.1 runs HKDF with the EPSK's hash (SHA-256) and takes 48 bytes; pskvault
// and Botan's importer do that and complete the handshake, while GnuTLS
// 3.8.13 runs HKDF-SHA-384 (derive_ipsk in lib/ext/pre_shared_key.c), gets
// another ipskx, and its binder fails.
func TestGnuTLSImporterHashDeviation(t *testing.T) {
	requireEnv(t)
	id := []byte("mixed-hash")
	ctx := []byte{7, 7}
	p := newPair(t, id) // SHA-256 EPSK, every target allowed
	srv, port := listening(t, prog("pskvault-botan-echo-server"), "--data-socket", p.b.inData, "--kdf", "sha384")
	args := []string{"--identity-hex", hex.EncodeToString(id), "--context-hex", hex.EncodeToString(ctx), "--kdf", "sha384"}

	out, err := run(t, prog("pskvault-botan-client"), append([]string{"--import-epsk", p.epsk, "--epsk-hash", "sha256",
		"--connect", "127.0.0.1:" + port, "--server-node", "node-b", "--message", "botan-native"}, args...)...)
	if err != nil || !strings.Contains(out, "reply: botan-native") {
		t.Fatalf("Botan's native importer (SHA-256 EPSK, SHA-384 target) -> pskvault-fed Botan server: %v\n%s\n%s", err, out, srv.out.String())
	}
	out, err = run(t, prog("gnutls-native"), append([]string{"client", "--epsk-file", p.epsk, "--port", port, "--message", "gnutls"}, args...)...)
	if err == nil || strings.Contains(out, "reply:") {
		t.Fatalf("GnuTLS 3.8 completed a SHA-256-EPSK/SHA-384-target handshake: its importer now follows RFC 9258 5.1; update the docs\n%s", out)
	}
	if l, ok := srv.waitFor("handshake failed:", 10*time.Second); !ok || !strings.Contains(l, "PSK binder does not check out") {
		t.Fatalf("want the binder refused, got %q\n%s", l, srv.out.String())
	}
}

// TestBotanPolicyRefuses: the Botan server enforces the vault's policy
// whatever the peer offers: a TLS 1.2 client, a psk_ke-only client and a
// client offering only suites of the other hash get no handshake.
func TestBotanPolicyRefuses(t *testing.T) {
	requireEnv(t)
	c := interopCases[0]
	p := newPair(t, c.identity, c.createArgs...)
	ctx := c.context(p)
	srv, port := listening(t, prog("pskvault-botan-echo-server"), "--data-socket", p.b.inData, "--kdf", c.kdf)
	native := []string{"client", "--identity-hex", hex.EncodeToString(c.identity), "--context-hex", hex.EncodeToString(ctx),
		"--kdf", c.kdf, "--epsk-file", p.epsk, "--port", port, "--message", "x"}
	for _, tc := range []struct{ name, priority string }{
		{"tls1.2", "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+ECDHE-PSK:+DHE-PSK:+PSK"},
		{"psk_ke-only", "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+PSK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, prog("gnutls-native"), append(native, "--priority", tc.priority)...)
			if err == nil || strings.Contains(out, "reply:") {
				t.Fatalf("%s client completed a handshake:\n%s", tc.name, out)
			}
			if _, ok := srv.waitFor("handshake failed:", 10*time.Second); !ok {
				t.Fatalf("server did not report a failed handshake:\n%s", srv.out.String())
			}
		})
	}
	// The control: the same client with the default priority completes.
	out, err := run(t, prog("gnutls-native"), native...)
	if err != nil || !strings.Contains(out, "reply: x") {
		t.Fatalf("control handshake failed: %v\n%s", err, out)
	}
}

// BenchmarkBotanHandshake measures, in one run of pskvault-botan-tool bench,
// TLS 1.3 psk_dhe_ke handshakes per second of a Botan server asking the
// vault's lookup at every handshake against the same server holding the same
// ipskx in memory (client and server in one process over memory, so the
// figure is the pair's CPU cost; soft backend; SHA-256 and SHA-384 targets).
// The tool runs 40 paired rounds of 50 handshakes in ABBA order and reports
// medians; b.N is not used, run with -benchtime 1x:
//
//	go test -run '^$' -bench BotanHandshake -benchtime 1x ./clients/botan
func BenchmarkBotanHandshake(b *testing.B) {
	requireEnv(b)
	for _, kdf := range []string{"sha256", "sha384"} {
		b.Run(kdf, func(b *testing.B) {
			args := []string{}
			if kdf == "sha384" {
				args = []string{"--hash", "sha384"}
			}
			p := newPair(b, []byte("bench-"+kdf), args...)
			cpu0 := p.b.cpuSeconds()
			out, err := run(b, prog("pskvault-botan-tool"), "bench", "--server-socket", p.b.inData, "--client-socket", p.a.inData,
				"--server-node", "node-b", "--kdf", kdf, "--rounds", "40", "--handshakes", "50")
			daemonCPU := p.b.cpuSeconds() - cpu0
			if err != nil {
				b.Fatalf("bench: %v\n%s", err, out)
			}
			var vault, memory, ratio, vaultUS, memoryUS, lookups float64
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "vault=") {
					fmt.Sscanf(l, "vault=%f/s memory=%f/s ratio=%f", &vault, &memory, &ratio)
				}
				if strings.HasPrefix(l, "cpu: ") {
					fmt.Sscanf(l, "cpu: vault_us_per_hs=%f memory_us_per_hs=%f vault_lookups=%f", &vaultUS, &memoryUS, &lookups)
				}
			}
			if vault == 0 || memory == 0 || vaultUS == 0 || lookups == 0 {
				b.Fatalf("no summary lines:\n%s", out)
			}
			// CPU per handshake, the vault variant charged with the daemon's
			// CPU time per lookup (the memory variant asks the daemon nothing).
			daemonUS := daemonCPU / lookups * 1e6
			cpuRatio := memoryUS / (vaultUS + daemonUS)
			out += fmt.Sprintf("daemon: %.0f us of CPU per lookup (%.2f s for %.0f lookups); CPU per handshake: vault %.0f us (TLS %.0f + daemon %.0f), memory %.0f us; CPU-bound rate ratio vault/memory %.3f\n",
				daemonUS, daemonCPU, lookups, vaultUS+daemonUS, vaultUS, daemonUS, memoryUS, cpuRatio)
			b.Logf("\n%s", out)
			b.ReportMetric(vault, "vault-hs/s")
			b.ReportMetric(memory, "memory-hs/s")
			b.ReportMetric(ratio, "wall-ratio")
			b.ReportMetric(vaultUS+daemonUS, "vault-cpu-us/hs")
			b.ReportMetric(memoryUS, "memory-cpu-us/hs")
			b.ReportMetric(cpuRatio, "cpu-ratio")
		})
	}
}

// TestBotanBothEndsFromVaults: two pskvault-fed Botan endpoints, each
// holding only its own vault's ipskx, complete TLS 1.3 with imp binders on
// both sides: pskvault nodes can run RFC 9258 between themselves too.
func TestBotanBothEndsFromVaults(t *testing.T) {
	requireEnv(t)
	for _, c := range interopCases {
		t.Run(c.name, func(t *testing.T) {
			p := newPair(t, c.identity, c.createArgs...)
			ctx := c.context(p)
			srvArgs := []string{"--data-socket", p.b.inData, "--kdf", c.kdf}
			cliArgs := []string{"--data-socket", p.a.inData, "--server-node", "node-b", "--kdf", c.kdf, "--message", "both-ends"}
			if c.createArgs[0] != "--node-context" {
				srvArgs = append(srvArgs, "--context-hex", hex.EncodeToString(ctx))
				cliArgs = append(cliArgs, "--context-hex", hex.EncodeToString(ctx))
			}
			srv, port := listening(t, prog("pskvault-botan-echo-server"), srvArgs...)
			out, err := run(t, prog("pskvault-botan-client"), append(cliArgs, "--connect", "127.0.0.1:"+port)...)
			if err != nil || !strings.Contains(out, "reply: both-ends") {
				t.Fatalf("Botan <-> Botan: %v\n%s\nserver:\n%s", err, out, srv.out.String())
			}
			want := p.b.derive(c.identity, ctx, c.kdf).ImportedIdentity
			if l, ok := srv.waitFor("handshake ok:", 10*time.Second); !ok || field(l, "identity") != hex.EncodeToString(want) {
				t.Fatalf("server: want identity %x, got %q", want, l)
			}
		})
	}
}
