package examples

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startMosquitto runs a mosquitto broker in the foreground, verbose, with
// one TLS 1.3 PSK listener on a free loopback port reading pskFile.
func startMosquitto(t *testing.T, pskFile string) (*proc, int) {
	t.Helper()
	return listenOnFreePort(t, "mosquitto", " running", func(port int) *proc {
		conf := filepath.Join(tempDir(t), "mosquitto.conf")
		lines := []string{
			"listener " + strconv.Itoa(port) + " 127.0.0.1",
			"psk_hint pskvault",
			"psk_file " + pskFile,
			"tls_version tlsv1.3",
			"use_identity_as_username true",
		}
		if os.Geteuid() == 0 {
			// Started as root, mosquitto drops to this user before it
			// reads psk_file (at start and on every reload; a root-owned
			// 0600 file stops it starting): the agent chowns the file.
			lines = append(lines, "user mosquitto")
		}
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return spawn(t, 5*time.Minute, "mosquitto", "-v", "-c", conf)
	})
}

// mqttArgs are the connection arguments of mosquitto_pub / mosquitto_sub.
// The key goes on argv: acceptable only in this test (the clients have no
// other way to take a PSK); a real client must not do this.
func mqttArgs(port int, id string, key []byte) []string {
	return []string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "--tls-version", "tlsv1.3",
		"--psk", hex.EncodeToString(key), "--psk-identity", id}
}

// publish runs mosquitto_pub once; it reports the error and output.
func publish(port int, id string, key []byte, topic, msg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := append(mqttArgs(port, id, key), "-t", topic, "-m", msg)
	out, err := exec.CommandContext(ctx, "mosquitto_pub", args...).CombinedOutput()
	return string(out), err
}

// TestAgentMosquitto: a mosquitto 2.0 broker on the server node reads the
// psk_file that node's pskvault agent writes (format mosquitto, role
// server); mosquitto_sub and mosquitto_pub on the client node use the key
// and identity (hex text) from the client node's derive. A message crosses
// the broker over TLS 1.3 (openssl s_client with the same PSK shows the
// version the broker negotiates); after a revoke on the server node the
// agent rewrites the file and sends mosquitto SIGHUP, which re-reads
// psk_file, and the next client connections are refused within a few
// seconds while the broker keeps running.
func TestAgentMosquitto(t *testing.T) {
	for _, tool := range []string{"mosquitto", "mosquitto_pub", "mosquitto_sub", "openssl"} {
		requireTool(t, tool)
	}
	p := newPair(t)
	dir := tempDir(t)
	srvFile, srvCfg := filepath.Join(dir, "mosquitto.psk"), filepath.Join(dir, "agent.json")
	out := map[string]any{"path": srvFile, "format": "mosquitto", "role": "server", "peer": "node-a"}
	if os.Geteuid() == 0 {
		out["owner"] = "mosquitto"
	}
	writeAgentConfig(t, srvCfg, p.b, out)
	if _, e, err := p.b.run(nil, "agent", "--config", srvCfg, "--once"); err != nil {
		t.Fatalf("agent --once: %v: %s", err, e)
	}
	id, key := clientSide(t, p.a, p.identity, nil)
	b, err := os.ReadFile(srvFile)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSuffix(string(b), "\n")
	gotID, gotKey, _ := strings.Cut(line, ":")
	if strings.Count(string(b), "\n") != 1 || gotID != id {
		t.Fatalf("psk_file: want one line %s:KEY, got %d lines, identities %q", id, strings.Count(string(b), "\n"), identities(b))
	}
	if gotKey != hex.EncodeToString(key) {
		t.Fatal("psk_file key and the client node's ipskx: mismatch")
	}

	broker, port := startMosquitto(t, srvFile)
	topic := fmt.Sprintf("pskvault/test/%d", time.Now().UnixNano())
	msg := fmt.Sprintf("hello-%d", time.Now().UnixNano())
	sub := spawn(t, time.Minute, "mosquitto_sub", append(mqttArgs(port, id, key), "-d", "-t", topic, "-C", "1", "-W", "30")...)
	// mosquitto_sub's own output is block-buffered into a pipe: the
	// broker's log says when the subscription is in place.
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(broker.out.String(), "Sending SUBACK"); {
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto_sub did not subscribe:\n%s\nbroker:\n%s", sub.out.String(), broker.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if o, err := publish(port, id, key, topic, msg); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s\nbroker:\n%s", err, o, broker.out.String())
	}
	// -C 1: it exits after one message, flushing what it printed.
	if err := sub.wait(15 * time.Second); err != nil || !strings.Contains(sub.out.String(), "\n"+msg+"\n") {
		t.Fatalf("mosquitto_sub did not receive the message: %v\n%s\nbroker:\n%s", err, sub.out.String(), broker.out.String())
	}
	// use_identity_as_username: the broker logs the PSK identity it matched.
	if n := strings.Count(broker.out.String(), "u'"+id+"'"); n != 2 {
		t.Fatalf("the broker logged %d clients with username %s, want 2:\n%s", n, id, broker.out.String())
	}

	// The protocol version the broker negotiates with this PSK.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	sc := exec.CommandContext(ctx, "openssl", "s_client", "-connect", "127.0.0.1:"+strconv.Itoa(port),
		"-psk", hex.EncodeToString(key), "-psk_identity", id, "-brief") // key on argv: test only
	sc.Stdin = strings.NewReader("")
	scOut, err := sc.CombinedOutput()
	cancel()
	if err != nil || !strings.Contains(string(scOut), "Protocol version: TLSv1.3") {
		t.Fatalf("openssl s_client against the broker (want TLSv1.3): %v\n%s", err, scOut)
	}

	// The agent, reloading mosquitto with SIGHUP.
	out["reload"] = []string{"/bin/kill", "-HUP", strconv.Itoa(broker.cmd.Process.Pid)}
	writeAgentConfig(t, srvCfg, p.b, out)
	agent := startAgent(t, srvCfg)
	reloads := func() int { return strings.Count(broker.out.String(), "Reloading config.") }

	p.b.cli(t, "psk", "revoke", "--identity", string(p.identity), "--reason", "test")
	// Refused within a few seconds: the file rewritten, mosquitto
	// reloaded, and a connection with the revoked key fails.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(srvFile)
		if !strings.Contains(string(b), id+":") && reloads() > 0 {
			if _, err := publish(port, id, key, topic, "after-revoke"); err != nil {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(srvFile)
			t.Fatalf("a connection with the revoked key still works (or no reload) 5s after the revoke\nidentities in file: %q\nreloads: %d\nagent:\n%s\nbroker:\n%s", identities(b), reloads(), agent.stderr.String(), broker.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	connected := strings.Count(broker.out.String(), "New client connected")
	if o, err := publish(port, id, key, topic, "after-revoke"); err == nil {
		t.Fatalf("a second connection with the revoked key succeeded:\n%s", o)
	}
	select {
	case <-broker.done:
		t.Fatalf("the broker exited: %v\n%s", broker.err, broker.out.String())
	default:
	}
	if n := strings.Count(broker.out.String(), "New client connected"); n != connected {
		t.Fatalf("the broker accepted %d clients after the refusal", n-connected)
	}
	if !strings.Contains(broker.out.String(), "OpenSSL Error") {
		t.Fatalf("the broker logged no TLS error for the refused clients:\n%s", broker.out.String())
	}
}
