// Package examples holds runnable end-to-end examples of pskvault with real
// TLS stacks, and the tests that keep them working: each test builds the
// pskvault binary, runs one daemon per node on the soft backend, and drives
// openssl and gnutls command-line tools against keys taken from the daemons.
package examples

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/internal/syncbuf"
)

// pskvaultBin is the binary built once by TestMain.
var pskvaultBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pskvault-examples-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // other uids run the binary in access tests
	pskvaultBin = filepath.Join(dir, "pskvault")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	out, err := exec.CommandContext(ctx, "go", "build", "-o", pskvaultBin, "github.com/pskvault/pskvault/cmd/pskvault").CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build pskvault: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireTool skips when a tool is missing, or fails when CI demands it.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
			t.Fatalf("%s not installed and PSKVAULT_REQUIRE_SIMULATORS=1 (./test.sh installs it)", name)
		}
		t.Skipf("%s not installed (./test.sh installs it)", name)
	}
	return p
}

// node is one vault with its daemon.
type node struct {
	t        testing.TB
	id       string
	stateDir string
	socket   string // admin socket
	data     string // data socket
	client   *client.Client
	stderr   *syncbuf.Buffer
	pid      int
}

// newNode initialises a soft-backend vault for id under a fresh directory
// and starts its daemon; the daemon is stopped in t.Cleanup.
func newNode(t testing.TB, id string, serveArgs ...string) *node {
	t.Helper()
	base := tempDir(t)
	n := &node{
		t:        t,
		id:       id,
		stateDir: filepath.Join(base, "state"),
		socket:   filepath.Join(base, "admin", "pskvault.sock"),
		data:     filepath.Join(base, "data", "pskvault.sock"),
	}
	n.cli(t, "init", "--node-id", id, "--backend", "soft")
	n.start(serveArgs...)
	return n
}

// tempDir is a t.TempDir that other uids may traverse.
func tempDir(t testing.TB) string {
	d := t.TempDir()
	for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

func (n *node) start(serveArgs ...string) {
	t := n.t
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"--state-dir", n.stateDir, "--socket", n.socket, "serve", "--data-socket", n.data}, serveArgs...)
	cmd := exec.CommandContext(ctx, pskvaultBin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	n.stderr = &syncbuf.Buffer{}
	cmd.Stderr = n.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start daemon for %s: %v", n.id, err)
	}
	n.pid = cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("daemon for %s did not stop on SIGTERM", n.id)
		}
		if n.client != nil {
			n.client.Close()
		}
	})
	n.client = client.New(n.socket)
	deadline := time.Now().Add(10 * time.Second)
	for {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		_, err := n.client.Status(sctx)
		scancel()
		if err == nil {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("daemon for %s exited: %v\n%s", n.id, err, n.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon for %s not answering: %v\n%s", n.id, err, n.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cli runs the pskvault binary against this node and returns stdout; it
// fails the test on a non-zero exit.
func (n *node) cli(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := n.run(nil, args...)
	if err != nil {
		t.Fatalf("pskvault %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// run runs the pskvault binary against this node, as cred when non-nil.
func (n *node) run(cred *syscall.Credential, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--state-dir", n.stateDir, "--socket", n.socket, "--data-socket", n.data}, args...)
	cmd := exec.CommandContext(ctx, pskvaultBin, full...)
	cmd.Env = append(os.Environ(), "HOME=/nonexistent")
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// derive asks this node's data socket for the imported PSK of identity
// under context, for TLS 1.3 with HKDF-SHA256.
func (n *node) derive(identity, context []byte) (*client.Derived, error) {
	ctx, cancel := context2()
	defer cancel()
	c := client.New(n.data)
	defer c.Close()
	return c.Derive(ctx, client.DeriveRequest{Identity: identity, Context: context, Protocol: "tls1.3", KDF: "sha256"})
}

func context2() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// listenOnFreePort starts a server on a free port and waits for its ready
// line. A port free a moment ago can be taken before the tool binds it (by
// any process's ephemeral bind or connect): then it tries another port.
func listenOnFreePort(t testing.TB, what, ready string, start func(port int) *proc) (*proc, int) {
	t.Helper()
	var out string
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		p := start(port)
		if p.waitFor(ready, 10*time.Second) {
			return p, port
		}
		p.wait(time.Second)
		out = p.out.String()
	}
	t.Fatalf("%s did not start on any of 3 free ports; last output:\n%s", what, out)
	return nil, 0
}

// proc is a spawned TLS tool whose combined output is watched line by line.
type proc struct {
	cmd   *exec.Cmd
	out   *syncbuf.Buffer
	lines chan string
	done  chan struct{} // closed when the process has exited
	eof   chan struct{} // closed when all of its output has been read
	err   error
	stdin interface {
		Write([]byte) (int, error)
		Close() error
	}
}

// spawn starts a tool bounded by timeout; it is killed in t.Cleanup.
func spawn(t testing.TB, timeout time.Duration, name string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	cmd.Dir = t.TempDir()
	p := &proc{cmd: cmd, out: &syncbuf.Buffer{}, lines: make(chan string, 256), done: make(chan struct{}), eof: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	pw.Close()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.out.Write(append(sc.Bytes(), '\n'))
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		pr.Close()
		close(p.lines)
		close(p.eof)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// waitFor waits for a line containing want; false on exit or timeout.
func (p *proc) waitFor(want string, timeout time.Duration) bool {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				return false
			}
			if strings.Contains(l, want) {
				return true
			}
		case <-tm.C:
			return false
		}
	}
}

// wait waits for the process to exit, killing it after timeout, and then
// for the last of its output to reach p.out: the process may exit before
// the reader has drained the pipe, so p.done alone does not mean p.out is
// complete.
func (p *proc) wait(timeout time.Duration) error {
	var err error
	select {
	case <-p.done:
		err = p.err
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		err = errors.New("timed out")
	}
	// A child the tool left behind may hold the pipe open: bounded.
	select {
	case <-p.eof:
	case <-time.After(2 * time.Second):
	}
	return err
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestProcWaitDrainsOutput: wait returns only once the output written
// before (or, by a child still holding the pipe, shortly after) the exit
// is in p.out. Without it, mosquitto_sub's one message was sometimes
// missing from its output in TestAgentMosquitto although it had exited 0.
func TestProcWaitDrainsOutput(t *testing.T) {
	p := spawn(t, 10*time.Second, "sh", "-c", "(sleep 0.3; echo late) & echo early")
	if err := p.wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := p.out.String(); got != "early\nlate\n" {
		t.Fatalf("output after wait: %q, want %q", got, "early\nlate\n")
	}
}
