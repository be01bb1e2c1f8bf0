// Package squatter is a test helper: a fake daemon that another local user
// runs on a socket path a pskvault client is about to use (issue 11 item 1).
// It accepts connections, counts the bytes each one sends, and answers any
// complete request with 200 and a key of its own choosing, as an attacker
// would. The test binary runs it: call Main first in TestMain, then Start.
package squatter

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const envSocket = "PSKVAULT_TEST_SQUATTER_SOCKET"

// Main runs the squatter and exits when the process was started as one by
// Start; otherwise it returns at once.
func Main() {
	path := os.Getenv(envSocket)
	if path == "" {
		return
	}
	if err := run(path); err != nil {
		fmt.Fprintln(os.Stderr, "squatter:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Answer is what the squatter sends back: a created "key" (32 bytes of 0x5a
// as 64 hex digits is what `psk create --out` would write) under identity "hi".
const Answer = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nPskvault-Identity-Hex: 6869\r\nContent-Length: 32\r\nConnection: close\r\n\r\nZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"

func run(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	os.Chmod(path, 0o666)
	fmt.Println("listening")
	var mu sync.Mutex
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			n, complete := readRequest(c)
			if complete {
				io.WriteString(c, Answer)
			}
			mu.Lock()
			fmt.Printf("received %d\n", n)
			mu.Unlock()
		}()
	}
}

// readRequest reads one request (head and Content-Length body) or what
// arrives before the peer closes or 5 s pass, and returns its length.
func readRequest(c net.Conn) (int, bool) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf bytes.Buffer
	tmp := make([]byte, 4096)
	for {
		if i := bytes.Index(buf.Bytes(), []byte("\r\n\r\n")); i >= 0 {
			want := 0
			for _, l := range strings.Split(buf.String()[:i], "\r\n") {
				if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
					want, _ = strconv.Atoi(strings.TrimSpace(v))
				}
			}
			if buf.Len() >= i+4+want {
				return buf.Len(), true
			}
		}
		n, err := c.Read(tmp)
		buf.Write(tmp[:n])
		if err != nil {
			return buf.Len(), false
		}
	}
}

// Squatter is a running fake daemon.
type Squatter struct {
	mu    sync.Mutex
	conns []int // bytes received on each finished connection
	cond  *sync.Cond
}

// Start runs the squatter as cred (another uid) listening on path, which it
// creates with its parents (as that uid); it is killed in t.Cleanup. The
// test binary is copied where cred can run it.
func Start(t *testing.T, path string, cred *syscall.Credential) *Squatter {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for p := dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	bin := filepath.Join(dir, "squatter")
	src, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), envSocket+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &Squatter{}
	s.cond = sync.NewCond(&s.mu)
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if line == "listening" {
				ready <- true
				continue
			}
			if n, ok := strings.CutPrefix(line, "received "); ok {
				v, _ := strconv.Atoi(n)
				s.mu.Lock()
				s.conns = append(s.conns, v)
				s.cond.Broadcast()
				s.mu.Unlock()
			}
		}
		ready <- false
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			t.Fatalf("squatter did not start: %s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("squatter did not start in 20 s: %s", stderr.String())
	}
	return s
}

// Conns waits until at least n connections have ended (or timeout passes)
// and returns the bytes received on each one so far.
func (s *Squatter) Conns(n int, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer t.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.conns) < n && time.Now().Before(deadline) {
		s.cond.Wait()
	}
	return append([]int(nil), s.conns...)
}
