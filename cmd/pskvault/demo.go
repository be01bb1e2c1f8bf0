package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/internal/syncbuf"
	"github.com/pskvault/pskvault/vault"
)

func init() {
	register(&command{name: "demo", summary: "run a two-node demo in a temporary directory (no setup, cleans up)",
		long: "Creates two throwaway vaults, runs a daemon for each, creates a PSK on one, hands it to the other as a bundle, derives the same imported PSK on both ends and (unless --no-tls) runs an OpenSSL TLS 1.3 handshake with it. Everything is removed afterwards unless --keep.",
		examples: []example{
			{"", "pskvault demo"},
			{"no OpenSSL, summary as JSON", "pskvault demo --no-tls --json"},
		},
		setup: setupDemo})
}

// demoNode is one vault with its own daemon.
type demoNode struct {
	name   string
	dir    string
	socket string
	cmd    *exec.Cmd
	c      *client.Client
}

func setupDemo(fs *flag.FlagSet, g *globals) func(context.Context, []string) error {
	keep := fs.Bool("keep", false, "keep the temporary directory for inspection")
	noTLS := fs.Bool("no-tls", false, "skip the OpenSSL handshake")
	asJSON := fs.Bool("json", false, "print a JSON summary (nodes, identity, derived, refusals, tls_handshake) on standard output; the narrative goes to standard error")
	return func(ctx context.Context, args []string) (err error) {
		w := g.stdout
		if *asJSON {
			w = g.stderr
		}
		res := demoJSON{Derived: []demoDerived{}}
		step := func(format string, a ...any) { fmt.Fprintf(w, "\n== "+format+"\n", a...) }
		tmp, err := os.MkdirTemp("", "pskvault-demo-")
		if err != nil {
			return err
		}
		var nodes []*demoNode
		defer func() {
			for _, n := range nodes {
				n.stop()
			}
			if *keep {
				fmt.Fprintf(w, "\nkept %s\n", tmp)
				res.Kept = tmp
			} else {
				os.RemoveAll(tmp)
			}
			if *asJSON && err == nil {
				err = writeJSON(g.stdout, res)
			}
		}()
		self, err := os.Executable()
		if err != nil {
			return err
		}
		start := func(name string) (*demoNode, error) {
			n := &demoNode{name: name, dir: filepath.Join(tmp, name), socket: filepath.Join(tmp, "run-"+name, "pskvault.sock")}
			if err := vault.Init(ctx, n.dir, vault.Config{NodeID: name, Backend: "soft"}); err != nil {
				return nil, err
			}
			log, err := os.OpenFile(filepath.Join(tmp, name+".log"), os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				return nil, err
			}
			defer log.Close()
			n.cmd = exec.Command(self, "--state-dir", n.dir, "--socket", n.socket, "serve")
			n.cmd.Stdout, n.cmd.Stderr = log, log
			if err := n.cmd.Start(); err != nil {
				return nil, err
			}
			nodes = append(nodes, n)
			res.Nodes = append(res.Nodes, name)
			n.c = client.New(n.socket)
			for i := 0; ; i++ {
				if _, err := n.c.Status(ctx); err == nil {
					break
				} else if i > 100 {
					return nil, fmt.Errorf("daemon for %s did not come up: %w", name, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			fmt.Fprintf(w, "   %s: vault %s, daemon pid %d on %s\n", name, n.dir, n.cmd.Process.Pid, n.socket)
			return n, nil
		}

		step("1. two nodes, each with its own vault (soft backend) and daemon")
		a, err := start("node-a")
		if err != nil {
			return err
		}
		b, err := start("node-b")
		if err != nil {
			return err
		}

		identity := []byte("demo-edge-origin-1")
		res.Identity = string(identity)
		spec := client.PSKSpec{Identity: identity, ClientNode: "node-a", ServerNode: "node-b"}
		spec.Policy.NodeContext = true // the RFC 9258 context names both nodes: no rerouting, no Selfie
		step("2. node-a generates a 256-bit pairwise EPSK %q for client node-a / server node-b,\n   bound to the node-identifier context", identity)
		_, key, err := a.c.Create(ctx, spec)
		if err != nil {
			return err
		}
		keyFile := filepath.Join(tmp, "epsk-for-node-b.hex")
		f, err := createSecretFile(keyFile)
		if err == nil {
			err = writeHexKey(f, key)
		}
		if err != nil {
			clear(key)
			return err
		}
		fmt.Fprintf(w, "   EPSK written 0600 to %s for delivery to node-b (never shown, never on argv)\n", keyFile)

		step("3. node-b imports it; both daemons now hold only the extracted PRK")
		if _, err := b.c.Import(ctx, spec, key); err != nil {
			clear(key)
			return err
		}
		os.Remove(keyFile)

		step("4. a third node, node-c, is refused the key: it is not party to it (RFC 9257 section 4.1)")
		c, err := start("node-c")
		if err != nil {
			clear(key)
			return err
		}
		_, err = c.c.Import(ctx, spec, key)
		clear(key)
		if err == nil {
			return errors.New("demo: node-c accepted a PSK it is not party to")
		}
		fmt.Fprintf(w, "   node-c: refused: %v\n", err)
		res.ThirdNodeRefused = true

		step("5. both sides derive RFC 9258 imported PSKs (each daemon fills in the node context); they must match")
		var tlsA *client.Derived
		for _, t := range [][2]string{{"tls1.3", "sha256"}, {"tls1.3", "sha384"}, {"dtls1.3", "sha256"}} {
			req := client.DeriveRequest{Identity: identity, Protocol: t[0], KDF: t[1]}
			da, err := a.c.Derive(ctx, req)
			if err != nil {
				return err
			}
			db, err := b.c.Derive(ctx, req)
			if err != nil {
				return err
			}
			same := subtle.ConstantTimeCompare(da.IPSKX, db.IPSKX) == 1 && bytes.Equal(da.ImportedIdentity, db.ImportedIdentity)
			fp := sha256.Sum256(da.IPSKX)
			fmt.Fprintf(w, "   %-8s %-7s imported identity %x\n            ipskx fingerprint sha256:%x on node-a (%s), node-b (%s): match=%v\n", t[0], t[1], da.ImportedIdentity, fp[:8], da.Response.Role, db.Response.Role, same)
			res.Derived = append(res.Derived, demoDerived{Protocol: t[0], KDF: t[1], ImportedIdentity: hex.EncodeToString(da.ImportedIdentity), Match: same})
			if !same {
				return errors.New("demo: the two nodes derived different keys")
			}
			if t == [2]string{"tls1.3", "sha256"} {
				tlsA = da
			} else {
				clear(da.IPSKX)
			}
			clear(db.IPSKX)
		}
		defer clear(tlsA.IPSKX)

		step("6. node-a's daemon refuses a context that names another server (rerouting, RFC 9257 section 4.1)")
		foreign, err := vault.NodeContext("node-a", "node-x")
		if err != nil {
			return err
		}
		if other, err := a.c.Derive(ctx, client.DeriveRequest{Identity: identity, Context: foreign, Protocol: "tls1.3", KDF: "sha256"}); err == nil {
			clear(other.IPSKX)
			return errors.New("demo: a context naming node-x was accepted")
		} else {
			fmt.Fprintf(w, "   refused: %v\n", err)
			res.ForeignContextRefused = true
		}

		step("7. a real TLS 1.3 handshake with the imported PSK")
		if *noTLS {
			fmt.Fprintln(w, "   skipped (--no-tls)")
			res.TLSHandshake = "skipped"
		} else if res.TLSHandshake, err = demoTLS(ctx, w, tlsA); err != nil {
			return err
		}
		fmt.Fprintln(w, "\ndemo complete: everything ran in", tmp, "and is being removed")
		return nil
	}
}

func (n *demoNode) stop() {
	if n.cmd != nil && n.cmd.Process != nil {
		n.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			n.cmd.Process.Kill()
		}
	}
	if n.c != nil {
		n.c.Close()
	}
}

// demoTLS runs openssl s_server and s_client with the imported PSK, in
// psk_dhe_ke mode (OpenSSL's default when both offer key shares).
func demoTLS(ctx context.Context, w io.Writer, d *client.Derived) (string, error) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		fmt.Fprintln(w, "   openssl is not installed: skipped")
		return "no openssl", nil
	}
	// The OpenSSL CLI takes the key only on argv; this is a throwaway demo
	// key. Production TLS stacks take it through their API from the socket.
	pskHex := hex.EncodeToString(d.IPSKX)
	idHex := hex.EncodeToString(d.ImportedIdentity)
	fmt.Fprintln(w, "   note: the openssl CLI only takes a PSK on its command line; fine for this throwaway demo key, never for real ones")
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	srv, err := startDemoServer(sctx, openssl, pskHex, idHex)
	if err != nil {
		return "", err
	}
	defer srv.stop()
	cli := exec.CommandContext(sctx, openssl, "s_client", "-connect", "127.0.0.1:"+srv.port, "-tls1_3",
		"-ciphersuites", "TLS_AES_128_GCM_SHA256", "-psk", pskHex, "-psk_identity", idHex, "-brief")
	cli.Stdin = strings.NewReader("hello from node-a over TLS 1.3 with an imported PSK\n")
	out, err := cli.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("openssl s_client failed: %w: %s", err, oneLine(string(out)))
	}
	<-srv.exited // -naccept 1: it ends with the connection
	got := srv.out.String()
	if !strings.Contains(got, "hello from node-a") {
		return "", fmt.Errorf("TLS handshake ran but the server did not receive the data: %s", oneLine(got))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Protocol version") || strings.HasPrefix(line, "Ciphersuite") {
			fmt.Fprintln(w, "   s_client:", strings.TrimSpace(line))
		}
	}
	fmt.Fprintln(w, "   openssl s_server received: hello from node-a over TLS 1.3 with an imported PSK")
	return "ok", nil
}

// demoServer is a running openssl s_server.
type demoServer struct {
	port   string
	out    *syncbuf.Buffer
	hold   io.WriteCloser // s_server closes the connection when its stdin ends
	cmd    *exec.Cmd
	exited chan struct{}
}

func (s *demoServer) stop() {
	s.hold.Close()
	s.cmd.Process.Kill()
	<-s.exited
}

// startDemoServer starts s_server on a free loopback port. A port free a
// moment ago can be taken before s_server binds it: then it tries another.
func startDemoServer(ctx context.Context, openssl, pskHex, idHex string) (*demoServer, error) {
	var lastOut string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		s := &demoServer{port: port, out: &syncbuf.Buffer{}, exited: make(chan struct{})}
		s.cmd = exec.CommandContext(ctx, openssl, "s_server", "-accept", "127.0.0.1:"+port, "-nocert", "-tls1_3",
			"-ciphersuites", "TLS_AES_128_GCM_SHA256", "-psk", pskHex, "-psk_identity", idHex, "-naccept", "1")
		s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
		if s.hold, err = s.cmd.StdinPipe(); err != nil {
			return nil, err
		}
		if err := s.cmd.Start(); err != nil {
			return nil, err
		}
		go func() { s.cmd.Wait(); close(s.exited) }()
		if s.ready(5 * time.Second) {
			return s, nil
		}
		s.stop()
		lastOut = s.out.String()
	}
	return nil, fmt.Errorf("openssl s_server did not start: %s", oneLine(lastOut))
}

// ready waits for s_server's ACCEPT line; false when it exits first or
// the wait runs out.
func (s *demoServer) ready(wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for !strings.Contains(s.out.String(), "ACCEPT") {
		select {
		case <-s.exited:
			return false
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
