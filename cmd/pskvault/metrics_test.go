package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/internal/metricstest"
	"github.com/pskvault/pskvault/internal/swtpmsim"
)

// scrapeAdmin reads GET /metrics on the admin socket and parses it.
func scrapeAdmin(t *testing.T, n *node) metricstest.Families {
	t.Helper()
	code, b := rawHTTP(t, n.socket, "GET", "/metrics", "", "")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, b)
	}
	fams, err := metricstest.Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func wantMetric(t *testing.T, fams metricstest.Families, v float64, name string, labels ...string) {
	t.Helper()
	got, ok := fams.Value(name, labels...)
	if !ok || got != v {
		t.Errorf("%s%v = %v (found %v), want %v", name, labels, got, ok, v)
	}
}

// TestMetricsScrape (issue 13, done-when): a daemon on a swtpm is scraped
// after a known sequence of derivations (ok, unknown PSK, a real other uid
// refused, a policy refusal), a backend outage (swtpm stopped: derivations
// fail, the availability gauge drops to 0, the backend-error count moves)
// and its end (swtpm restarted: derivations work, the gauge is 1 again);
// the counters are checked exactly. The TCP metrics listener serves the
// exposition and /healthz and not /v1/derive. A run of successful
// derivations writes no daemon log line and one audit line each.
func TestMetricsScrape(t *testing.T) {
	sim := swtpmsim.Start(t)
	n := newNode(t, "node-a", sim.URI())
	out := n.serveWith("--request-timeout", "3s", "--metrics-listen", "127.0.0.1:0")
	if o, code := n.run(nil, "psk", "create", "--identity", "svc", "--client", "node-a", "--server", "node-b", "--out", filepath.Join(t.TempDir(), "k.hex")); code != 0 {
		t.Fatal(o)
	}
	data := defaultDataSocket(n.socket)
	waitSocket(t, data)
	m := regexp.MustCompile(`msg="serving metrics" address=(127\.0\.0\.1:[0-9]+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no metrics listener address in the log:\n%s", out)
	}
	tcp := "http://" + m[1]

	derive := func(body string) (int, string) {
		t.Helper()
		code, b := rawHTTP(t, data, "POST", "/v1/derive", "application/json", body)
		return code, errCode(b)
	}
	const (
		unknown = `{"identity":"nope","protocol":"tls1.3","kdf":"sha256"}`
		policy  = `{"identity":"svc","protocol":"tls1.3","kdf":"sha256","role":"server"}`
	)
	ok := 0
	for range 3 {
		if code, c := derive(deriveBody); code != 200 {
			t.Fatalf("derive: %d %s", code, c)
		}
		ok++
	}
	if code, c := derive(unknown); code != 404 || c != api.CodeNotFound {
		t.Fatalf("derive of an unknown PSK: %d %s", code, c)
	}
	if code, c := derive(policy); code != 403 {
		t.Fatalf("derive as the server of a PSK whose server is node-b: %d %s", code, c)
	}
	denied := 0
	if os.Geteuid() == 0 {
		// A real other uid, not in the access list: answered like an
		// unknown PSK, counted as denied.
		openToOthers(t, n)
		res := runChildAs(t, &syscall.Credential{Uid: 65533, Gid: 65534}, "derive", data, "2")
		if res.Status[404] != 2 {
			t.Fatalf("uid 65533's derives: %v %v", res.Status, res.Errors)
		}
		denied = 2
	} else {
		t.Log("not root: no other uid to refuse (the denied count is checked as 0)")
	}

	// Successful derivations write no daemon log line, and one audit line
	// each.
	auditPath := filepath.Join(n.dir, "audit.log")
	logBefore, auditBefore := out.String(), countLines(t, auditPath)
	const quiet = 20
	for range quiet {
		if code, c := derive(deriveBody); code != 200 {
			t.Fatalf("derive: %d %s", code, c)
		}
		ok++
	}
	if grew := strings.TrimPrefix(out.String(), logBefore); grew != "" {
		t.Errorf("%d successful derivations wrote to the daemon log:\n%s", quiet, grew)
	}
	if got := countLines(t, auditPath) - auditBefore; got != quiet {
		t.Errorf("%d successful derivations wrote %d audit lines, want one each", quiet, got)
	}

	fams := scrapeAdmin(t, n)
	wantMetric(t, fams, float64(ok), "pskvault_derives_total", "result", "ok", "role", "client", "backend", "tpm")
	wantMetric(t, fams, 1, "pskvault_derives_total", "result", "not_found", "role", "none")
	wantMetric(t, fams, 1, "pskvault_derives_total", "result", "policy", "role", "none")
	wantMetric(t, fams, float64(denied), "pskvault_derives_total", "result", "denied", "role", "none")
	wantMetric(t, fams, 0, "pskvault_derives_total", "result", "backend_error", "role", "none")
	wantMetric(t, fams, 1, "pskvault_backend_up", "backend", "tpm")
	wantMetric(t, fams, 1, "pskvault_psks", "state", "active")
	if hmacs, _ := fams.Value("pskvault_backend_operation_duration_seconds", "op", "hmac"); hmacs < float64(ok) {
		t.Errorf("%v HMAC calls timed for %d derivations", hmacs, ok)
	}
	if stores, _ := fams.Value("pskvault_backend_operation_duration_seconds", "op", "store"); stores < 1 {
		t.Errorf("the create's key store was not timed")
	}

	// The outage.
	if err := sim.Stop(); err != nil {
		t.Fatal(err)
	}
	failed := 0
	if code, c := derive(deriveBody); code != 503 || c != api.CodeUnavailable {
		t.Fatalf("derive with the swtpm stopped: %d %s, want 503 %s", code, c, api.CodeUnavailable)
	}
	failed++
	fams = scrapeAdmin(t, n)
	wantMetric(t, fams, 0, "pskvault_backend_up", "backend", "tpm")
	wantMetric(t, fams, float64(failed), "pskvault_derives_total", "result", "backend_error", "role", "none")
	if e, _ := fams.Value("pskvault_backend_operation_errors_total", "op", "hmac"); e < 1 {
		t.Errorf("backend HMAC errors: %v, want at least 1", e)
	}
	for _, c := range []struct{ sock, name string }{{data, "data socket"}, {n.socket, "admin socket"}} {
		code, b := rawHTTP(t, c.sock, "GET", "/v1/health", "", "")
		if code != 503 || errCode(b) != api.CodeUnavailable {
			t.Errorf("health on the %s with the swtpm stopped: %d %s", c.name, code, b)
		}
		if c.sock == data && strings.Contains(string(b), "127.0.0.1") {
			t.Errorf("the data socket's health answer names the device: %s", b)
		}
	}
	if code, body := httpGet(t, tcp+"/healthz"); code != 503 {
		t.Errorf("/healthz with the swtpm stopped: %d %s", code, body)
	}

	// The outage ends.
	if err := sim.Restart(); err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(30 * time.Second)
	for {
		code, c := derive(deriveBody)
		if code == 200 {
			ok++
			break
		}
		if code != 503 || c != api.CodeUnavailable || time.Now().After(end) {
			t.Fatalf("derive after the swtpm restarted: %d %s", code, c)
		}
		failed++
		time.Sleep(100 * time.Millisecond)
	}
	fams = scrapeAdmin(t, n)
	wantMetric(t, fams, 1, "pskvault_backend_up", "backend", "tpm")
	wantMetric(t, fams, float64(ok), "pskvault_derives_total", "result", "ok", "role", "client")
	wantMetric(t, fams, float64(failed), "pskvault_derives_total", "result", "backend_error", "role", "none")
	wantMetric(t, fams, 1, "pskvault_derives_total", "result", "not_found", "role", "none")
	wantMetric(t, fams, float64(denied), "pskvault_derives_total", "result", "denied", "role", "none")
	if sum := fams.Sum("pskvault_derives_total"); sum != float64(ok+failed+denied+2) {
		t.Errorf("derivations in all: %v, want %d", sum, ok+failed+denied+2)
	}
	wantMetric(t, fams, float64(ok+failed+denied+2), "pskvault_request_duration_seconds", "socket", "data", "endpoint", "derive")
	wantMetric(t, fams, 0, "pskvault_audit_write_failures_total")
	if code, b := rawHTTP(t, data, "GET", "/v1/health", "", ""); code != 200 {
		t.Errorf("health after the restart: %d %s", code, b)
	}

	// A flood of health checks costs the device at most one probe a
	// second (counted by the backend histogram's random calls).
	probesBefore, _ := fams.Value("pskvault_backend_operation_duration_seconds", "op", "random")
	t0 := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	checks := 0
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(t0) < 2500*time.Millisecond {
				if code, _, err := oneRequest(data, "GET", "/v1/health", "", 10*time.Second); err != nil || code != 200 {
					t.Errorf("health during the flood: %d %v", code, err)
					return
				}
				mu.Lock()
				checks++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	flood := time.Since(t0)
	fams = scrapeAdmin(t, n)
	probes, _ := fams.Value("pskvault_backend_operation_duration_seconds", "op", "random")
	probes -= probesBefore
	if maxProbes := flood.Seconds() + 2; probes < 1 || probes > maxProbes {
		t.Errorf("%d health checks in %v made %v probes of the TPM, want 1 to %.0f (one a second)", checks, flood, probes, maxProbes)
	}
	t.Logf("%d health checks in %v: %v TPM probes", checks, flood.Round(time.Millisecond), probes)

	// The TCP listener: the exposition and /healthz, nothing else.
	if code, body := httpGet(t, tcp+"/metrics"); code != 200 || !strings.Contains(body, "pskvault_derives_total") {
		t.Errorf("GET %s/metrics: %d %.200s", tcp, code, body)
	}
	if code, body := httpGet(t, tcp+"/healthz"); code != 200 {
		t.Errorf("GET %s/healthz: %d %s", tcp, code, body)
	}
	resp, err := http.Post(tcp+"/v1/derive", "application/json", strings.NewReader(deriveBody))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || bytes.Contains(b, []byte("ipskx")) {
		t.Errorf("POST /v1/derive on the metrics listener: %d %s, want 404", resp.StatusCode, b)
	}
	for _, p := range []string{"/v1/status", "/v1/psks", "/v1/health"} {
		if code, body := httpGet(t, tcp+p); code != 404 {
			t.Errorf("GET %s on the metrics listener: %d %s, want 404", p, code, body)
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}
