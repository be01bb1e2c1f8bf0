package botan

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/internal/syncbuf"
)

// The chroot, the programs built in it, and the pskvault binary, set up once
// by the first test that needs them.
var (
	setupOnce sync.Once
	setupErr  error
	env       struct {
		chroot   string // host path of the forky chroot
		build    string // host path of the build directory (inside the chroot)
		inBuild  string // the same directory as the chroot sees it
		runDir   string // host path of a directory for data sockets (inside the chroot)
		inRun    string
		pskvault string // host path of the pskvault binary
		tmp      string // host directory for the binary
	}
)

func TestMain(m *testing.M) {
	code := m.Run()
	if env.build != "" {
		os.RemoveAll(env.build)
	}
	if env.runDir != "" {
		os.RemoveAll(env.runDir)
	}
	if env.tmp != "" {
		os.RemoveAll(env.tmp)
	}
	os.Exit(code)
}

// requireEnv skips (or fails, under PSKVAULT_REQUIRE_SIMULATORS=1) when the
// chroot cannot be had, and otherwise builds everything once.
func requireEnv(t testing.TB) {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") == "1" {
			t.Fatalf("%s (PSKVAULT_REQUIRE_SIMULATORS=1: the native-importer interop tests must run)", msg)
		}
		t.Skip(msg)
	}
	if os.Geteuid() != 0 {
		unavailable("needs root: the Debian forky chroot is built with debootstrap and entered with chroot")
	}
	for _, tool := range []string{"debootstrap", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable("%s not installed (./test.sh installs debootstrap)", tool)
		}
	}
	setupOnce.Do(setup)
	if setupErr != nil {
		unavailable("%v", setupErr)
	}
}

func setup() {
	setupErr = func() error {
		dir, err := os.MkdirTemp("", "pskvault-botan-")
		if err != nil {
			return err
		}
		env.tmp = dir
		env.pskvault = filepath.Join(dir, "pskvault")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", env.pskvault, "github.com/pskvault/pskvault/cmd/pskvault").CombinedOutput(); err != nil {
			return fmt.Errorf("build pskvault: %v\n%s", err, out)
		}
		// chroot.sh builds the chroot when it is missing or incomplete (up
		// to some minutes) and prints which Botan and GnuTLS it holds.
		cctx, ccancel := context.WithTimeout(context.Background(), 40*time.Minute)
		defer ccancel()
		cmd := exec.CommandContext(cctx, "./chroot.sh")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		fmt.Fprint(os.Stderr, stderr.String())
		if err != nil {
			return fmt.Errorf("clients/botan/chroot.sh failed: %v", err)
		}
		env.chroot = strings.TrimSpace(string(out))
		if env.build, err = os.MkdirTemp(filepath.Join(env.chroot, "tmp"), "pskvault-botan-build-"); err != nil {
			return err
		}
		env.inBuild = "/" + mustRel(env.chroot, env.build)
		for _, p := range []string{"Makefile", "src", "gnutls-native", "../c"} {
			if out, err := exec.Command("cp", "-r", p, env.build+"/").CombinedOutput(); err != nil {
				return fmt.Errorf("copy %s into the chroot: %v: %s", p, err, out)
			}
		}
		mctx, mcancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer mcancel()
		if out, err := exec.CommandContext(mctx, "chroot", env.chroot, "make", "-C", env.inBuild, "-j2", "CLIB="+env.inBuild+"/c", "BUILD=build").CombinedOutput(); err != nil {
			return fmt.Errorf("build the Botan consumer and gnutls-native in the chroot: %v\n%s", err, out)
		}
		// Data sockets live under the chroot's /run so that programs inside
		// it reach them; the directory is root's and 0755 all the way up, as
		// the daemon requires.
		if err := os.MkdirAll(filepath.Join(env.chroot, "run"), 0o755); err != nil {
			return err
		}
		if env.runDir, err = os.MkdirTemp(filepath.Join(env.chroot, "run"), "pskvault-botan-"); err != nil {
			return err
		}
		os.Chmod(env.runDir, 0o755)
		env.inRun = "/" + mustRel(env.chroot, env.runDir)
		return nil
	}()
}

func mustRel(base, p string) string {
	r, err := filepath.Rel(base, p)
	if err != nil {
		panic(err)
	}
	return r
}

// hostCLib builds pskvault's C library and its OpenSSL and GnuTLS 3.7
// example programs on the host (Debian 12's libssl-dev and
// libgnutls28-dev): the "ext binder" consumers. Returns the build directory.
var (
	clibOnce sync.Once
	clibDir  string
	clibErr  error
)

func hostCLib(t testing.TB) string {
	t.Helper()
	clibOnce.Do(func() {
		clibDir = filepath.Join(env.tmp, "clib")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "make", "-C", "../c", "-s", "BUILD="+clibDir, "all").CombinedOutput()
		if err != nil {
			clibErr = fmt.Errorf("make -C clients/c: %v\n%s", err, out)
		}
	})
	if clibErr != nil {
		t.Fatal(clibErr)
	}
	return clibDir
}

// hostServer starts a host program that listens on a free loopback port
// and prints a line containing ready; it retries on another port when the
// one picked was taken before the program bound it.
func hostServer(t testing.TB, ready string, start func(addr string) *proc) (*proc, string) {
	t.Helper()
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		p := start(addr)
		if _, ok := p.waitFor(ready, 15*time.Second); ok {
			return p, addr
		}
		last = p.out.String()
	}
	t.Fatalf("server did not start on any of 3 ports:\n%s", last)
	return nil, ""
}

// prog is a program of the build directory, by its path inside the chroot.
func prog(name string) string { return env.inBuild + "/build/" + name }

// node is one vault on the soft backend with its daemon; its data socket is
// inside the chroot.
type node struct {
	t        testing.TB
	id       string
	stateDir string
	admin    string
	data     string // host path
	inData   string // path inside the chroot
	cancel   context.CancelFunc
	done     chan struct{}
	pid      int
	stderr   *syncbuf.Buffer
}

func newNode(t testing.TB, id string) *node {
	t.Helper()
	base := t.TempDir()
	sock, err := os.MkdirTemp(env.runDir, id+"-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o755)
	t.Cleanup(func() { os.RemoveAll(sock) })
	n := &node{t: t, id: id, stateDir: filepath.Join(base, "state"), admin: filepath.Join(base, "admin", "s.sock"),
		data: filepath.Join(sock, "data", "s.sock")}
	n.inData = "/" + mustRel(env.chroot, n.data)
	n.cli("init", "--node-id", id, "--backend", "soft")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, env.pskvault, "--state-dir", n.stateDir, "--socket", n.admin, "serve",
		"--data-socket", n.data, "--log-level", "warn")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	n.stderr = &syncbuf.Buffer{}
	cmd.Stderr = n.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	n.cancel, n.done, n.pid = cancel, make(chan struct{}), cmd.Process.Pid
	go func() { cmd.Wait(); close(n.done) }()
	t.Cleanup(func() { cancel(); <-n.done })
	c := client.New(n.data)
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Status(sctx)
		scancel()
		if err == nil {
			return n
		}
		select {
		case <-n.done:
			t.Fatalf("daemon for %s exited:\n%s", id, n.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon for %s not answering: %v\n%s", id, err, n.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cli runs the pskvault binary against this node; it fails the test on a
// non-zero exit.
func (n *node) cli(args ...string) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--state-dir", n.stateDir, "--socket", n.admin, "--data-socket", n.data}, args...)
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, env.pskvault, full...)
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		n.t.Fatalf("pskvault %s: %v\n%s", strings.Join(args, " "), err, e.String())
	}
	return o.String()
}

// derive asks this node's data socket for an imported PSK.
func (n *node) derive(identity, ctxBytes []byte, kdf string) *client.Derived {
	n.t.Helper()
	c := client.New(n.data)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.Derive(ctx, client.DeriveRequest{Identity: identity, Context: ctxBytes, Protocol: "tls1.3", KDF: kdf})
	if err != nil {
		n.t.Fatalf("%s derive: %v", n.id, err)
	}
	return d
}

// cpuSeconds is the daemon's CPU time so far (user and system, from
// /proc/PID/stat, in clock ticks of 1/100 s).
func (n *node) cpuSeconds() float64 {
	n.t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.pid))
	if err != nil {
		n.t.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ut, st float64
	fmt.Sscan(f[11], &ut) // utime is field 14 of stat, 12th after the name
	fmt.Sscan(f[12], &st)
	return (ut + st) / 100
}

// auditHas reports whether this node's audit log has a line with every
// one of the given fragments.
func (n *node) auditHas(fragments ...string) bool {
	raw, _ := os.ReadFile(filepath.Join(n.stateDir, "audit.log"))
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		ok := true
		for _, f := range fragments {
			ok = ok && strings.Contains(sc.Text(), f)
		}
		if ok {
			return true
		}
	}
	return false
}

// pair is node-a (TLS client) and node-b (TLS server) sharing one EPSK,
// created on node-a and imported on node-b; epsk is a 0600 copy of the key
// file inside the chroot, for the native-importer peer only.
type pair struct {
	a, b     *node
	identity []byte
	epsk     string // path inside the chroot
}

func newPair(t testing.TB, identity []byte, createArgs ...string) *pair {
	t.Helper()
	p := &pair{a: newNode(t, "node-a"), b: newNode(t, "node-b"), identity: identity}
	p.addPSK(t, identity, createArgs...)
	return p
}

// addPSK creates one more PSK on node-a, imports it on node-b, and leaves
// its EPSK in the chroot for the native peer (p.epsk).
func (p *pair) addPSK(t testing.TB, identity []byte, createArgs ...string) {
	t.Helper()
	f, err := os.CreateTemp(env.build, "epsk-")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.Remove(f.Name()) // psk create never overwrites
	t.Cleanup(func() { os.Remove(f.Name()) })
	idHex := fmt.Sprintf("%x", identity)
	hash := "sha256"
	for i, a := range createArgs {
		if a == "--hash" && i+1 < len(createArgs) {
			hash = createArgs[i+1]
		}
	}
	args := append([]string{"psk", "create", "--identity-hex", idHex, "--client", "node-a", "--server", "node-b", "--format", "hex", "--out", f.Name()}, createArgs...)
	p.a.cli(args...)
	imp := []string{"psk", "import", "--identity-hex", idHex, "--client", "node-a", "--server", "node-b", "--key-file", f.Name(), "--hash", hash}
	for _, a := range createArgs {
		if a == "--node-context" {
			imp = append(imp, a)
		}
	}
	p.b.cli(imp...)
	p.epsk = "/" + mustRel(env.chroot, f.Name())
}

// proc is a program run in the chroot, its output watched line by line.
type proc struct {
	cmd   *exec.Cmd
	out   *syncbuf.Buffer
	lines chan string
	done  chan struct{}
	err   error
}

func spawn(t testing.TB, timeout time.Duration, name string, args ...string) *proc {
	t.Helper()
	return spawnCmd(t, timeout, "chroot", append([]string{env.chroot, name}, args...)...)
}

// spawnHost runs a program on the host, not in the chroot.
func spawnHost(t testing.TB, timeout time.Duration, name string, args ...string) *proc {
	t.Helper()
	return spawnCmd(t, timeout, name, args...)
}

func spawnCmd(t testing.TB, timeout time.Duration, name string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	cmd.Dir = "/"
	p := &proc{cmd: cmd, out: &syncbuf.Buffer{}, lines: make(chan string, 1024), done: make(chan struct{})}
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
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.out.Write(append(sc.Bytes(), '\n'))
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		pr.Close()
		close(p.lines)
	}()
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { cancel(); <-p.done })
	return p
}

// waitFor waits for a line starting with prefix and returns it.
func (p *proc) waitFor(prefix string, timeout time.Duration) (string, bool) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				return "", false
			}
			if strings.HasPrefix(l, prefix) {
				return l, true
			}
		case <-tm.C:
			return "", false
		}
	}
}

// run runs a program in the chroot to its end and returns its output.
func run(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	p := spawn(t, 60*time.Second, name, args...)
	select {
	case <-p.done:
	case <-time.After(70 * time.Second):
		return p.out.String(), errors.New("timed out")
	}
	for range p.lines {
	}
	return p.out.String(), p.err
}

// listening starts a server program and returns it with its port.
func listening(t testing.TB, name string, args ...string) (*proc, string) {
	t.Helper()
	p := spawn(t, 5*time.Minute, name, args...)
	l, ok := p.waitFor("listening on ", 30*time.Second)
	if !ok {
		t.Fatalf("%s did not start:\n%s", name, p.out.String())
	}
	return p, strings.TrimPrefix(l, "listening on ")
}
