package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs handler on a Unix socket and counts the connections it accepts.
func serve(t *testing.T, h http.HandlerFunc) (string, *atomic.Int32, *http.Server) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock, &conns, srv
}

func TestSyncTransportReusesAndRecovers(t *testing.T) {
	sock, conns, srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
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
	srv.SetKeepAlivesEnabled(false) // closes idle connections
	srv.SetKeepAlivesEnabled(true)
	time.Sleep(50 * time.Millisecond)
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
