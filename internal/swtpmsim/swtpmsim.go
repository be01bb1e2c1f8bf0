// Package swtpmsim starts and stops a throwaway swtpm (software TPM 2.0) for
// tests and benchmarks, so that every TPM test runs the same code path as
// production against a real TPM command stream.
//
// Each simulator lives in its own temporary directory, listens on loopback
// (TCP) or a unix socket, writes a PID file, and is stopped by that PID in
// t.Cleanup. When swtpm is not installed the test is skipped, unless
// PSKVAULT_REQUIRE_SIMULATORS=1 (CI sets it), in which case it fails.
package swtpmsim

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RequireEnv is the environment variable that turns a missing simulator
// into a test failure instead of a skip.
const RequireEnv = "PSKVAULT_REQUIRE_SIMULATORS"

// SharedEnv names a swtpm the caller already runs (host:port of its TCP
// command channel, e.g. from simulators/swtpm.sh). Benchmarks in several
// packages use it so that all figures come from the same simulator.
const SharedEnv = "PSKVAULT_BENCH_SWTPM"

// Shared returns the swtpm named by PSKVAULT_BENCH_SWTPM, or launches a
// private one. Close stops only a simulator Shared launched.
func Shared() (*Sim, error) {
	addr := os.Getenv(SharedEnv)
	if addr == "" {
		return Launch()
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		return nil, fmt.Errorf("%s=%q: want 127.0.0.1:PORT", SharedEnv, addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: bad port", SharedEnv, addr)
	}
	return &Sim{Port: p, CtrlPort: p + 1}, nil
}

// Sim is a running (or stopped) swtpm.
type Sim struct {
	Dir      string // private directory: state/, swtpm.pid, swtpm.log
	StateDir string // the TPM's persistent state (kept across Restart)
	Unix     bool   // unix sockets instead of loopback TCP
	Port     int    // TCP command port (Unix == false)
	CtrlPort int    // TCP control port (Unix == false)
	Socket   string // unix command socket (Unix == true)

	cmd *exec.Cmd
	pid int
}

// Option configures Start.
type Option func(*Sim)

// UnixSocket makes the simulator listen on unix sockets in its directory.
func UnixSocket() Option { return func(s *Sim) { s.Unix = true } }

// Available reports whether swtpm is installed, and why not.
func Available() error {
	if _, err := exec.LookPath("swtpm"); err != nil {
		return fmt.Errorf("swtpm is not installed (apt-get install swtpm swtpm-tools): %w", err)
	}
	return nil
}

// SkipOrFail skips tb when err is not nil, or fails it when
// PSKVAULT_REQUIRE_SIMULATORS=1.
func SkipOrFail(tb testing.TB, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("%v (%s=1, so this is a failure, not a skip)", err, RequireEnv)
	}
	tb.Skipf("%v (set %s=1 to make this a failure)", err, RequireEnv)
}

// Start starts a fresh swtpm and registers its stop with tb.Cleanup. It
// skips (or fails, see RequireEnv) when swtpm is not installed.
func Start(tb testing.TB, opts ...Option) *Sim {
	tb.Helper()
	SkipOrFail(tb, Available())
	s, err := Launch(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("stopping swtpm: %v", err)
		}
	})
	return s
}

// Launch starts a fresh swtpm in a new temporary directory. The caller
// must Close it.
func Launch(opts ...Option) (*Sim, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pskvault-swtpm-")
	if err != nil {
		return nil, err
	}
	s := &Sim{Dir: dir, StateDir: filepath.Join(dir, "state")}
	for _, o := range opts {
		o(s)
	}
	if err := os.Mkdir(s.StateDir, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if s.Unix {
		s.Socket = filepath.Join(dir, "swtpm.sock")
	}
	if err := s.start(false); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// Close stops the simulator and removes its directory.
func (s *Sim) Close() error {
	err := s.Stop()
	if s.Dir != "" {
		os.RemoveAll(s.Dir)
	}
	return err
}

// URI is the pskvault backend URI that reaches this simulator.
func (s *Sim) URI() string {
	if s.Unix {
		return "tpm:swtpm-unix=" + s.Socket
	}
	return fmt.Sprintf("tpm:swtpm=127.0.0.1:%d", s.Port)
}

// Addr is host:port of the TCP command channel.
func (s *Sim) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

// TCTI is the TPM2TOOLS_TCTI value for tpm2-tools (TCP only).
func (s *Sim) TCTI() string { return fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", s.Port) }

// PID is the simulator's process ID, or 0 when stopped.
func (s *Sim) PID() int { return s.pid }

// Restart stops the simulator and starts it again on the same ports and
// state directory, the way a host reboot or a crashed swtpm would: volatile
// state (loaded objects, sessions, PCRs) is lost, persistent state is kept.
func (s *Sim) Restart() error {
	if s.Dir == "" {
		return errors.New("swtpmsim: cannot restart a simulator this process did not start")
	}
	if err := s.Stop(); err != nil {
		return err
	}
	return s.start(true)
}

// start launches swtpm. A first start picks free ports and moves on to
// others if they are taken meanwhile; a restart must come back on the same
// ports, where clients will look for it, so it waits for them instead: a
// port released by the old process can be held for a moment by any other
// process's ephemeral bind or connect.
func (s *Sim) start(samePorts bool) error {
	var lastErr error
	attempts := 10
	if samePorts {
		attempts = 50
	}
	for attempt := 0; attempt < attempts; attempt++ {
		if samePorts && attempt > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		if !s.Unix && !samePorts && (s.Port == 0 || attempt > 0) {
			p, err := freePortPair()
			if err != nil {
				return err
			}
			s.Port, s.CtrlPort = p, p+1
		}
		if err := s.launch(); err != nil {
			lastErr = err
			continue
		}
		return nil
	}
	return fmt.Errorf("swtpm did not start: %w", lastErr)
}

func (s *Sim) launch() error {
	pidFile := filepath.Join(s.Dir, "swtpm.pid")
	os.Remove(pidFile)
	args := []string{"socket", "--tpm2",
		"--tpmstate", "dir=" + s.StateDir,
		"--flags", "not-need-init,startup-clear",
		"--pid", "file=" + pidFile,
		"--log", "file=" + filepath.Join(s.Dir, "swtpm.log") + ",level=1",
	}
	if s.Unix {
		os.Remove(s.Socket)
		os.Remove(s.Socket + ".ctrl")
		args = append(args,
			"--server", "type=unixio,path="+s.Socket,
			"--ctrl", "type=unixio,path="+s.Socket+".ctrl")
	} else {
		args = append(args,
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.Port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.CtrlPort))
	}
	cmd := exec.Command("swtpm", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("swtpm exited: %v: %s", err, strings.TrimSpace(stderr.String()))
		default:
		}
		if s.ready(pidFile) {
			b, _ := os.ReadFile(pidFile)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if pid != cmd.Process.Pid {
				cmd.Process.Kill()
				<-exited
				return fmt.Errorf("swtpm PID file says %d, started %d", pid, cmd.Process.Pid)
			}
			s.cmd, s.pid = cmd, pid
			go func() { <-exited }() // reap it when it stops
			return nil
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return errors.New("swtpm did not open its socket within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Sim) ready(pidFile string) bool {
	if _, err := os.Stat(pidFile); err != nil {
		return false
	}
	// Both channels must accept connections. A probe connection that hangs
	// up at once is harmless: swtpm just waits for the next client.
	for _, a := range s.addrs() {
		c, err := net.Dial(a[0], a[1])
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

func (s *Sim) addrs() [][2]string {
	if s.Unix {
		return [][2]string{{"unix", s.Socket + ".ctrl"}, {"unix", s.Socket}}
	}
	return [][2]string{
		{"tcp", fmt.Sprintf("127.0.0.1:%d", s.CtrlPort)},
		{"tcp", fmt.Sprintf("127.0.0.1:%d", s.Port)},
	}
}

// Stop stops the simulator by its PID and waits for it to exit.
func (s *Sim) Stop() error {
	if s.pid == 0 {
		return nil
	}
	pid := s.pid
	s.pid = 0
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Errorf("swtpm %d ignored SIGTERM for 5s; sent SIGKILL", pid)
}

// freePortPair finds two consecutive free loopback TCP ports.
func freePortPair() (int, error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return p, nil
	}
	return 0, errors.New("no two consecutive free loopback ports")
}
