package api

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func getWatch(t *testing.T, c *http.Client, body string) (int, WatchResponse) {
	t.Helper()
	resp, err := c.Post("http://pskvault/v1/watch", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var w WatchResponse
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &w); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, w
}

// TestWatchLimits: bad queries are refused; a watch with nothing changed
// answers unchanged when its wait ends; a uid holds at most
// MaxWatchesPerUID watches; shutdown ends open watches at once and leaves
// no goroutine behind.
func TestWatchLimits(t *testing.T) {
	base := runtime.NumGoroutine()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ss, errc, err := NewServerWith(testVault(t), Options{MaxWatchesPerUID: 2}).Serve(l, SocketData)
	if err != nil {
		t.Fatal(err)
	}
	c := unixHTTP(sock)
	for _, q := range []string{`{"wait_seconds":51}`, `{"wait_seconds":-1}`, `{"wait_seconds":"x"}`, `{"since":1}`, `{"other":1}`, ``, `{}{}`} {
		if code, _ := getWatch(t, c, q); code != http.StatusBadRequest {
			t.Errorf("watch %s: status %d, want 400", q, code)
		}
	}
	_, first := getWatch(t, c, `{}`)
	if first.Token == "" || first.Changed {
		t.Fatalf("first watch: %+v", first)
	}
	start := time.Now()
	if _, w := getWatch(t, c, `{"wait_seconds":1,"since":"`+first.Token+`"}`); w.Changed || w.Token != first.Token || time.Since(start) < time.Second {
		t.Fatalf("unchanged watch: %+v after %v", w, time.Since(start))
	}
	// A token from elsewhere is simply not the current one.
	if _, w := getWatch(t, c, `{"wait_seconds":1,"since":"00"}`); !w.Changed || w.Token != first.Token {
		t.Fatalf("watch with a foreign token: %+v", w)
	}

	held := make(chan time.Time, 2)
	for range 2 {
		go func() {
			cc := unixHTTP(sock)
			resp, err := cc.Post("http://pskvault/v1/watch", "application/json", strings.NewReader(`{"wait_seconds":50,"since":"`+first.Token+`"}`))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			held <- time.Now()
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := getWatch(t, c, `{"wait_seconds":0,"since":"`+first.Token+`"}`); code == http.StatusTooManyRequests {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a third watch of one uid was not refused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.CloseIdleConnections()
	stop := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ss.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with open watches: %v", err)
	}
	<-errc
	for range 2 {
		if at := <-held; at.Sub(stop) > 2*time.Second {
			t.Fatalf("a watch outlived shutdown by %v", at.Sub(stop))
		}
	}
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > base+2; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left (from %d):\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
