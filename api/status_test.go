package api

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestDataStatusSaysLittle: GET /v1/status on the data socket, which every
// local user may reach, names no path, device or token (issue 11 item 4);
// the admin socket's answer is unchanged.
func TestDataStatusSaysLittle(t *testing.T) {
	v := testVault(t)
	s := NewServerWith(v, Options{})
	get := func(sock Socket) map[string]any {
		path := filepath.Join(t.TempDir(), string(sock)+".sock")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		ss, _, err := s.Serve(l, sock)
		if err != nil {
			t.Fatal(err)
		}
		defer ss.Close()
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get("http://pskvault/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s status: %d %s", sock, resp.StatusCode, raw)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	admin := get(SocketAdmin)
	desc, _ := admin["backend"].(map[string]any)["description"].(string)
	if !strings.Contains(desc, "soft.kek") {
		t.Errorf("admin status backend description %q: want the KEK file named", desc)
	}

	data := get(SocketData)
	// Exactly these fields, whatever the backend: a whitelist, so a field
	// added later has to be let through on purpose.
	want := map[string][]string{"": {"backend", "node_id", "psks", "version"}, "backend": {"hardware", "hashes", "name"}}
	keys := func(m map[string]any) string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	if got := keys(data); got != strings.Join(want[""], ",") {
		t.Errorf("data status fields %s, want %s", got, strings.Join(want[""], ","))
	}
	b, _ := data["backend"].(map[string]any)
	if got := keys(b); got != strings.Join(want["backend"], ",") {
		t.Errorf("data status backend fields %s, want %s", got, strings.Join(want["backend"], ","))
	}
	raw, _ := json.Marshal(data)
	if strings.Contains(string(raw), v.BackendInfo().Description) || strings.Contains(string(raw), "soft.kek") {
		t.Errorf("data status names the backend's KEK file: %s", raw)
	}
}
