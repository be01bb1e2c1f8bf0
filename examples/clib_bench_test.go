package examples

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/internal/swtpmsim"
)

var rateRE = regexp.MustCompile(`handshakes=(\d+) ok=(\d+) seconds=([0-9.]+) rate=([0-9.]+)/s`)

// BenchmarkCLibHandshakes: TLS 1.3 psk_dhe_ke handshakes per second with
// the C library's OpenSSL server (clients/c, optimised build) asking the
// vault at every handshake ("vault"), against the same server program
// holding the same key in memory ("memory"), for a server node on each
// backend. The client is the same OpenSSL example with the key in memory in
// both cases, so only the server side differs. One op is one handshake
// (sequential: one client, one single-threaded server); an op is one
// handshake on each server. docs/BENCHMARKS.md has the figures and the
// command:
//
//	go test ./examples -run '^$' -bench CLibHandshakes -benchtime 2000x -count 3
func BenchmarkCLibHandshakes(b *testing.B) {
	dir := buildCLib(b, false)
	for _, backend := range []string{"soft", "tpm", "pkcs11"} {
		b.Run(backend, func(b *testing.B) {
			uri := "soft"
			switch backend {
			case "tpm":
				uri = swtpmsim.Start(b).URI()
			case "pkcs11":
				uri = pkcs11test.Require(b, "pskvault-clib-bench").URI()
			}
			a := newNode(b, "node-a")
			bn := newNodeOn(b, "node-b", uri)
			keyFile := filepath.Join(b.TempDir(), "epsk.hex")
			a.cli(b, "psk", "create", "--identity", "bench-link", "--client", "node-a", "--server", "node-b", "--format", "hex", "--out", keyFile)
			bn.cli(b, "psk", "import", "--identity", "bench-link", "--client", "node-a", "--server", "node-b", "--key-file", keyFile)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c := client.New(a.data)
			d, err := c.Derive(ctx, client.DeriveRequest{Identity: []byte("bench-link"), Protocol: "tls1.3", KDF: "sha256"})
			c.Close()
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			memKey := hex.EncodeToString(d.ImportedIdentity) + " " + hex.EncodeToString(d.IPSKX) + "\n"
			clear(d.IPSKX)

			vaultSrv, vaultAddr := cServer(b, filepath.Join(dir, "ossl_echo_server"), bn, "--quiet")
			var memAddr string
			memSrv, _ := listenOnFreePort(b, "memory-key server", "listening", func(port int) *proc {
				memAddr = fmt.Sprintf("127.0.0.1:%d", port)
				p := spawn(b, 30*time.Minute, filepath.Join(dir, "ossl_echo_server"), "--memory-key", "--quiet", "--listen", memAddr)
				p.stdin.Write([]byte(memKey)) // the key on stdin, never argv
				return p
			})
			// The two servers are measured in alternating batches, so that the
			// load of a shared machine, which drifts over seconds, weighs on
			// both alike; each batch's time is the client's own, from its
			// first handshake to its last.
			batch := func(addr string, n int) float64 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, filepath.Join(dir, "ossl_echo_client"), "--memory-key", "--connect", addr, "--count", strconv.Itoa(n), "--quiet")
				cmd.Stdin = strings.NewReader(memKey)
				out, err := cmd.CombinedOutput()
				mm := rateRE.FindStringSubmatch(string(out))
				if err != nil || mm == nil || mm[1] != mm[2] {
					b.Fatalf("client: %v\n%s\nvault server:\n%s\nmemory server:\n%s", err, out, vaultSrv.out.String(), memSrv.out.String())
				}
				sec, _ := strconv.ParseFloat(mm[3], 64)
				return sec
			}
			const per = 100
			var memSec, vaultSec float64
			var memCPU, vaultCPU, daemonCPU time.Duration
			done := 0
			b.ResetTimer()
			for done < b.N {
				n := min(per, b.N-done)
				if n < 2 {
					n = 2
				}
				c0 := cpuOf(b, memSrv.cmd.Process.Pid)
				memSec += batch(memAddr, n)
				memCPU += cpuOf(b, memSrv.cmd.Process.Pid) - c0
				v0, d0 := cpuOf(b, vaultSrv.cmd.Process.Pid), cpuOf(b, bn.pid)
				vaultSec += batch(vaultAddr, n)
				vaultCPU += cpuOf(b, vaultSrv.cmd.Process.Pid) - v0
				daemonCPU += cpuOf(b, bn.pid) - d0
				done += n
			}
			b.StopTimer()
			b.ReportMetric(float64(done)/memSec, "memory-hs/s")
			b.ReportMetric(float64(done)/vaultSec, "vault-hs/s")
			b.ReportMetric(100*memSec/vaultSec, "vault/memory-%")
			// CPU per handshake does not depend on what else the machine
			// runs: the server's alone in memory, the server's plus the
			// daemon's (one lookup) with the vault.
			us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(done) }
			b.ReportMetric(us(memCPU), "memory-server-cpu-us/hs")
			b.ReportMetric(us(vaultCPU), "vault-server-cpu-us/hs")
			b.ReportMetric(us(daemonCPU), "daemon-cpu-us/hs")
			b.ReportMetric(100*us(memCPU)/(us(vaultCPU)+us(daemonCPU)), "cpu-memory/vault-%")
			if strings.Contains(vaultSrv.out.String(), "status=") {
				b.Fatalf("the vault server refused lookups:\n%s", vaultSrv.out.String())
			}
		})
	}
}

// cpuOf is the CPU time (user and system, every thread) of process pid so
// far, from /proc/PID/task/*/schedstat.
func cpuOf(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var ns int64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that just ended
		}
		if fs := strings.Fields(string(b)); len(fs) > 0 {
			v, _ := strconv.ParseInt(fs[0], 10, 64)
			ns += v
		}
	}
	if len(files) == 0 {
		tb.Fatalf("no schedstat for pid %d", pid)
	}
	return time.Duration(ns)
}
