package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs handler on a Unix socket and counts the connections it accepts.
// dropConns closes the server's end of every connection accepted so far, as
// a daemon restart or its idle timeout would.
func serve(t *testing.T, h http.HandlerFunc) (sock string, conns *atomic.Int32, dropConns func()) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: l}
	conns = new(atomic.Int32)
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go srv.Serve(rl)
	t.Cleanup(func() { srv.Close() })
	return sock, conns, rl.closeAll
}

// recordingListener remembers the connections it accepts.
type recordingListener struct {
	net.Listener
	mu       sync.Mutex
	accepted []net.Conn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.accepted = append(l.accepted, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *recordingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.accepted {
		c.Close()
	}
	l.accepted = nil
}

func TestSyncTransportReusesAndRecovers(t *testing.T) {
	sock, conns, dropConns := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"version":"x","node_id":"n"}`))
	})
	c := New(sock)
	defer c.Close()
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if _, err := c.Status(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 sequential requests used %d connections, want 1 kept alive", n)
	}
	// The daemon drops idle connections (IdleTimeout, restart): the next
	// request notices the dead connection and goes out on a fresh one.
	// (Closing the server's end directly: http.Server.SetKeepAlivesEnabled
	// only closes connections it has already marked idle, which races with
	// the client reading the last answer.)
	dropConns()
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("request after the server closed the idle connection: %v", err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("connections: %d, want 2", n)
	}
}

func TestSyncTransportHonoursContext(t *testing.T) {
	sock, _, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	c := New(sock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Status(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a cancelled request took %v to give up", d)
	}
}

func TestSyncTransportNoDaemon(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "none.sock"))
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("got %v, want ErrNoDaemon", err)
	}
}

// TestSyncTransportStreamedBodyAfterIdle: a request with a streamed body
// (a batch import), sent after the daemon dropped the kept-alive connection,
// goes out on a fresh connection and succeeds: such a body cannot be resent,
// so a stale connection must never be tried first.
func TestSyncTransportStreamedBodyAfterIdle(t *testing.T) {
	sock, conns, dropConns := serve(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"version":"x","node_id":"%d"}`, len(b))
	})
	c := New(sock)
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	dropConns()
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte("streamed")); pw.Close() }()
	resp, err := c.doReader(ctx, http.MethodPost, "/v1/psks/import-batch", "application/octet-stream", pr)
	if err != nil {
		t.Fatalf("streamed request after the daemon dropped the idle connection: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"node_id":"8"`) {
		t.Fatalf("answer %s: the body did not arrive whole", b)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("connections: %d, want 2", n)
	}
}
