package examples

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/internal/syncbuf"
)

// agentProc is a running `pskvault agent`.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
}

// writeAgentConfig writes an agent configuration with one output.
func writeAgentConfig(t testing.TB, path string, n *node, output map[string]any) {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"data_socket": n.data, "outputs": []any{output}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startAgent runs `pskvault agent --config cfg` until the test ends.
func startAgent(t testing.TB, cfg string) *agentProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, pskvaultBin, "agent", "--config", cfg)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	p := &agentProc{cmd: cmd, stderr: &syncbuf.Buffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	return p
}

// echoServer uppercases what it reads, one connection at a time.
func echoServer(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					io.WriteString(c, strings.ToUpper(line))
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// startStunnel runs stunnel in the foreground with one service, TLS 1.3
// only, the PSKs from pskFile.
func startStunnel(t *testing.T, name string, client bool, connect int, pskFile string) (*proc, int) {
	t.Helper()
	return listenOnFreePort(t, "stunnel "+name, "Configuration successful", func(port int) *proc {
		conf := filepath.Join(t.TempDir(), name+".conf")
		lines := []string{"foreground = yes", "pid =", "debug = 6", "[" + name + "]"}
		if client {
			lines = append(lines, "client = yes")
		}
		lines = append(lines,
			"accept = 127.0.0.1:"+strconv.Itoa(port),
			"connect = 127.0.0.1:"+strconv.Itoa(connect),
			"sslVersionMin = TLSv1.3",
			"ciphersuites = TLS_AES_128_GCM_SHA256",
			"PSKsecrets = "+pskFile)
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return spawn(t, 5*time.Minute, "stunnel", conf)
	})
}

// tunnel sends one line through the client stunnel and reports whether
// the echo came back: the handshake worked and data crossed both ways.
func tunnel(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 3*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := fmt.Sprintf("ping-%d\n", time.Now().UnixNano())
	if _, err := io.WriteString(c, msg); err != nil {
		return false
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && got == strings.ToUpper(msg)
}

var pskLine = regexp.MustCompile(`^[0-9a-f]{2,128}:[0-9a-f]{64}$`)

// identities lists a PSKsecrets file's identities (never its keys).
func identities(b []byte) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		id, _, _ := strings.Cut(l, ":")
		out = append(out, id)
	}
	return out
}

// firstIdentity is the identity of a PSKsecrets file's first line.
func firstIdentity(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	id, _, _ := strings.Cut(string(b), ":")
	return id
}

// TestAgentStunnel: stunnel on both ends, each fed by a pskvault agent of
// its own node's daemon. A handshake works and data crosses; after a
// rotation the client's file leads with the new generation and the
// server's holds both, rewritten and stunnel reloaded within a second,
// and the next connection uses the new generation; after a revoke on the
// server node its file drops the key within a second and the next
// handshake fails; a key past its not-after leaves the server's file
// within a second, with no request in between. A reader looping over the server's file during all
// rewrites never sees it half-written.
func TestAgentStunnel(t *testing.T) {
	requireTool(t, "stunnel")
	p := newPair(t)
	dir := tempDir(t)
	srvFile, cliFile := filepath.Join(dir, "server.psk"), filepath.Join(dir, "client.psk")
	srvCfg, cliCfg := filepath.Join(dir, "server-agent.json"), filepath.Join(dir, "client-agent.json")
	srvOut := map[string]any{"path": srvFile, "format": "stunnel", "role": "server", "peer": "node-a"}
	cliOut := map[string]any{"path": cliFile, "format": "stunnel", "role": "client", "peer": "node-b"}
	writeAgentConfig(t, srvCfg, p.b, srvOut)
	writeAgentConfig(t, cliCfg, p.a, cliOut)
	// --once first: stunnel needs its file at start.
	if _, e, err := p.b.run(nil, "agent", "--config", srvCfg, "--once"); err != nil {
		t.Fatalf("agent --once (server): %v: %s", err, e)
	}
	if _, e, err := p.a.run(nil, "agent", "--config", cliCfg, "--once"); err != nil {
		t.Fatalf("agent --once (client): %v: %s", err, e)
	}
	for _, f := range []string{srvFile, cliFile} {
		fi, err := os.Lstat(f)
		if err != nil || fi.Mode().Perm() != 0o600 || !fi.Mode().IsRegular() {
			t.Fatalf("%s: %v, mode %v; want a 0600 file", f, err, fi.Mode())
		}
	}
	g1 := firstIdentity(cliFile)
	if g1 == "" || firstIdentity(srvFile) != g1 {
		t.Fatalf("client and server files disagree: %q vs %q", g1, firstIdentity(srvFile))
	}
	back := echoServer(t)
	srv, srvPort := startStunnel(t, "server", false, back, srvFile)
	cli, cliPort := startStunnel(t, "client", true, srvPort, cliFile)
	if !tunnel(cliPort) {
		t.Fatalf("no data through the tunnel\nserver:\n%s\nclient:\n%s", srv.out.String(), cli.out.String())
	}
	if !strings.Contains(srv.out.String(), `PSK identity "`+g1+`"`) {
		t.Fatalf("stunnel server did not use identity %s:\n%s", g1, srv.out.String())
	}

	// Now the agents, each reloading its stunnel with SIGHUP.
	srvOut["reload"] = []string{"/bin/kill", "-HUP", strconv.Itoa(srv.cmd.Process.Pid)}
	cliOut["reload"] = []string{"/bin/kill", "-HUP", strconv.Itoa(cli.cmd.Process.Pid)}
	writeAgentConfig(t, srvCfg, p.b, srvOut)
	writeAgentConfig(t, cliCfg, p.a, cliOut)
	sa, ca := startAgent(t, srvCfg), startAgent(t, cliCfg)

	// A reader looping over the server's file all along.
	var reads, torn atomic.Int64
	var tornSample atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(srvFile)
			if err != nil {
				torn.Add(1)
				tornSample.Store("read error: " + err.Error())
				continue
			}
			reads.Add(1)
			s := string(b)
			ok := strings.HasSuffix(s, "\n")
			for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
				ok = ok && pskLine.MatchString(l)
			}
			if !ok {
				torn.Add(1)
				tornSample.Store(fmt.Sprintf("%d bytes", len(b)))
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// A reload is done once stunnel has bound its service again.
	reloads := func(pr *proc) int { return strings.Count(pr.out.String(), ") bound to ") }
	// A connection that arrives while stunnel swaps its listening socket
	// on SIGHUP is reset before any TLS: try a few times.
	tunnelRetry := func() bool {
		for i := 0; i < 5; i++ {
			if tunnel(cliPort) {
				return true
			}
			time.Sleep(200 * time.Millisecond)
		}
		return false
	}
	within := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				sf, _ := os.ReadFile(srvFile)
				cf, _ := os.ReadFile(cliFile)
				t.Fatalf("%s: not within one second\nserver agent:\n%s\nclient agent:\n%s\nidentities: server file %q, client file %q\nstunnel reloads: server %d, client %d", what, sa.stderr.String(), ca.stderr.String(), identities(sf), identities(cf), reloads(srv), reloads(cli))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Rotation: node-a makes the next generation, node-b takes its key.
	next := filepath.Join(t.TempDir(), "next.bundle")
	sr, cr := reloads(srv), reloads(cli)
	p.a.cli(t, "psk", "rotate", "--identity", string(p.identity), "--new-identity", "tls-a-b.g2", "--overlap", "1h", "--out", next)
	within("client file leads with the new generation and stunnel reloaded", func() bool {
		return firstIdentity(cliFile) != g1 && reloads(cli) > cr
	})
	g2 := firstIdentity(cliFile)
	p.b.cli(t, "psk", "import", "--bundle", next) // the rotation bundle: new identity, key and overlap
	within("server file holds both generations and stunnel reloaded", func() bool {
		b, _ := os.ReadFile(srvFile)
		return strings.HasPrefix(string(b), g2+":") && strings.Contains(string(b), "\n"+g1+":") && reloads(srv) > sr
	})
	if !tunnelRetry() {
		t.Fatalf("no data through the tunnel after the rotation\nserver:\n%s\nclient:\n%s", srv.out.String(), cli.out.String())
	}
	if !strings.Contains(srv.out.String(), `PSK identity "`+g2+`"`) {
		t.Fatalf("stunnel server did not see the new generation %s:\n%s", g2, srv.out.String())
	}
	wantG2, _ := hex.DecodeString(g2)
	if !strings.Contains(string(wantG2), "tls-a-b.g2") {
		t.Fatalf("the new first identity %s is not tls-a-b.g2's ImportedIdentity", g2)
	}

	// Revoke on the server node: its file drops g2 at once, the client
	// still offers g2 first, and the next handshake fails.
	sr = reloads(srv)
	p.b.cli(t, "psk", "revoke", "--identity", "tls-a-b.g2", "--reason", "test")
	within("server file without the revoked key and stunnel reloaded", func() bool {
		b, _ := os.ReadFile(srvFile)
		return !strings.Contains(string(b), g2+":") && reloads(srv) > sr
	})
	accepted := strings.Count(srv.out.String(), "TLS accepted")
	if tunnelRetry() {
		t.Fatal("a handshake with the revoked key succeeded")
	}
	if n := strings.Count(srv.out.String(), "TLS accepted"); n != accepted {
		t.Fatalf("stunnel server accepted %d TLS connections after the revoke", n-accepted)
	}
	if !strings.Contains(srv.out.String(), "TLS accepted") {
		t.Fatal("the server log never shows an accepted TLS connection: the check above proves nothing")
	}

	// Expiry: a PSK valid for a few seconds enters the server's file at
	// once and leaves it within a second of its not-after, with no request
	// to either daemon in between.
	short := filepath.Join(t.TempDir(), "short.hex")
	p.a.cli(t, "psk", "create", "--identity", "short", "--client", "node-a", "--server", "node-b", "--valid-for", "4s", "--format", "hex", "--out", short)
	p.b.cli(t, "psk", "import", "--identity", "short", "--client", "node-a", "--server", "node-b", "--valid-for", "4s", "--key-file", short)
	rec, err := p.b.client.Get(t.Context(), []byte("short"))
	if err != nil {
		t.Fatal(err)
	}
	shortHex := hex.EncodeToString([]byte("short"))
	within("server file with the short-lived key", func() bool {
		b, _ := os.ReadFile(srvFile)
		return strings.Contains(string(b), shortHex)
	})
	for time.Now().Before(rec.NotAfter) {
		time.Sleep(10 * time.Millisecond)
	}
	within("server file without the expired key", func() bool {
		b, _ := os.ReadFile(srvFile)
		return !strings.Contains(string(b), shortHex)
	})

	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	if n := torn.Load(); n > 0 {
		t.Fatalf("the reader saw %d torn or missing files of %d reads (e.g. %v)", n, reads.Load(), tornSample.Load())
	}
	if reads.Load() < 100 {
		t.Fatalf("the reader managed only %d reads", reads.Load())
	}
}
