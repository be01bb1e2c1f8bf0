package examples

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/client"
)

// slowAttack runs in a child process under another uid (see
// TestAbusiveClients): it opens n connections to the socket and trickles a
// request header into each, one byte every 200 ms, for d; it prints how many
// connections the daemon dropped at once (connection cap).
func slowAttack(sock string, n int, d time.Duration) {
	var dropped, held atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("unix", sock)
			if err != nil {
				dropped.Add(1)
				return
			}
			defer c.Close()
			req := []byte("POST /v1/derive HTTP/1.1\r\nHost: pskvault\r\nContent-Length: 10\r\n")
			end := time.Now().Add(d)
			for i := 0; time.Now().Before(end); i++ {
				if _, err := c.Write(req[i%len(req) : i%len(req)+1]); err != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			var ne net.Error
			b := make([]byte, 64)
			k, err := c.Read(b)
			if err != nil && !(errors.As(err, &ne) && ne.Timeout()) || strings.HasPrefix(string(b[:k]), "HTTP/1.1 503") {
				dropped.Add(1) // closed, or refused with 503 too_many_connections
				return
			}
			held.Add(1)
		}()
	}
	wg.Wait()
	fmt.Printf("dropped=%d held=%d\n", dropped.Load(), held.Load())
}

func init() {
	if sock := os.Getenv("PSKVAULT_TEST_SLOW_ATTACK"); sock != "" {
		slowAttack(sock, 40, 3*time.Second)
		os.Exit(0)
	}
}

// TestAbusiveClients sends malformed, truncated, oversized and slow requests
// (the slow ones from another uid, beyond its connection cap) while a
// well-behaved client keeps deriving; every good request gets the right key,
// every bad one a 4xx or a closed connection, and the daemon stays up.
func TestAbusiveClients(t *testing.T) {
	requireRoot(t)
	n := newNode(t, "node-a", "--allow-client", "user:65533", "--max-conns-per-uid", "8")
	keyFile := filepath.Join(t.TempDir(), "epsk.hex")
	n.cli(t, "psk", "create", "--identity", "svc", "--client", "node-a", "--server", "node-b", "--format", "hex", "--out", keyFile)
	epsk, _ := os.ReadFile(keyFile)
	want, err := n.derive([]byte("svc"), []byte("ctx"))
	if err != nil {
		t.Fatal(err)
	}

	// The good client: keep-alive, one derive every 10 ms.
	stop := make(chan struct{})
	var good, bad atomic.Int32
	var worst atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := client.New(n.data)
		defer c.Close()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			t0 := time.Now()
			d, err := c.Derive(ctx, client.DeriveRequest{Identity: []byte("svc"), Context: []byte("ctx"), Protocol: "tls1.3", KDF: "sha256"})
			cancel()
			if el := time.Since(t0); el.Nanoseconds() > worst.Load() {
				worst.Store(el.Nanoseconds())
			}
			if err != nil || !bytes.Equal(d.IPSKX, want.IPSKX) {
				bad.Add(1)
				continue
			}
			good.Add(1)
		}
	}()

	// Slow clients under uid 65533, more than its cap.
	attacker := filepath.Join(filepath.Dir(pskvaultBin), "examples.test")
	if err := copyFile(os.Args[0], attacker); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	slow := exec.CommandContext(ctx, attacker, "-test.run=^$")
	slow.Env = append(os.Environ(), "PSKVAULT_TEST_SLOW_ATTACK="+n.data)
	slow.SysProcAttr = &syscall.SysProcAttr{Credential: otherUser}
	var slowOut bytes.Buffer
	slow.Stdout, slow.Stderr = &slowOut, &slowOut
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}

	// Bad requests from root, on raw connections.
	raw := func(req string) string {
		c, err := net.Dial("unix", n.data)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(15 * time.Second))
		io.WriteString(c, req)
		if cw, ok := c.(*net.UnixConn); ok && strings.HasSuffix(req, "TRUNCATE") {
			cw.CloseWrite()
		}
		b, _ := io.ReadAll(io.LimitReader(c, 1<<16))
		return string(b)
	}
	post := func(body string) string {
		return raw("POST /v1/derive HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	}
	cases := []struct{ name, answer, want string }{
		{"malformed JSON", post(`{"identity":`), "400"},
		{"unknown field", post(`{"identity":"svc","protocol":"tls1.3","kdf":"sha256","x":1}`), "400"},
		{"bad hex", post(`{"identity_hex":"zz","protocol":"tls1.3","kdf":"sha256"}`), "bad_hex"},
		{"TLS 1.2 target", post(`{"identity":"svc","protocol":"tls1.2","kdf":"sha256"}`), "400"},
		{"oversized", post(`{"identity":"` + strings.Repeat("a", api.MaxBody+10) + `"}`), "413"},
		{"huge header", raw("GET /v1/status HTTP/1.1\r\nHost: p\r\nX: " + strings.Repeat("a", 1<<20) + "\r\n\r\n"), "431"},
		{"truncated body", raw("POST /v1/derive HTTP/1.1\r\nHost: p\r\nContent-Length: 500\r\n\r\n{\"identity\":TRUNCATE"), "400"},
		{"not HTTP", raw("\x16\x03\x01\x00\x05hello\r\n\r\n"), "400"},
		{"admin endpoint on data socket", raw("GET /v1/psks HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"), "404"},
	}
	for _, c := range cases {
		if !strings.Contains(c.answer, c.want) {
			t.Errorf("%s: want %q in the answer, got %.200q", c.name, c.want, c.answer)
		}
		if strings.Contains(c.answer, strings.TrimSpace(string(epsk))) {
			t.Errorf("%s: answer holds the EPSK", c.name)
		}
	}
	if err := slow.Wait(); err != nil {
		t.Fatalf("slow attacker: %v\n%s", err, slowOut.String())
	}
	close(stop)
	wg.Wait()
	t.Logf("good client: %d right answers, %d wrong or failed, worst latency %v; slow attacker: %s",
		good.Load(), bad.Load(), time.Duration(worst.Load()), strings.TrimSpace(slowOut.String()))
	if bad.Load() != 0 || good.Load() < 50 {
		t.Fatalf("good client: %d right, %d wrong", good.Load(), bad.Load())
	}
	var dropped, held int
	fmt.Sscanf(strings.TrimSpace(slowOut.String()), "dropped=%d held=%d", &dropped, &held)
	if dropped < 40-8 {
		t.Errorf("the per-uid cap dropped %d of 40 slow connections, want at least 32", dropped)
	}
	// Still serving, and still right.
	if d, err := n.derive([]byte("svc"), []byte("ctx")); err != nil || !bytes.Equal(d.IPSKX, want.IPSKX) {
		t.Fatalf("after the abuse: %v", err)
	}
	if strings.Contains(n.stderr.String(), "panic") {
		t.Fatalf("daemon log mentions a panic:\n%s", n.stderr.String())
	}
	// Hardening visible from outside: no core dumps.
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", n.pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(l, "Max core file size") && !strings.Contains(l, " 0 ") {
			t.Errorf("daemon allows core dumps: %s", l)
		}
	}
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
