package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pskvault/pskvault/backends/pkcs11/pkcs11test"
	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/internal/swtpmsim"
	"github.com/pskvault/pskvault/vault"
)

// BenchmarkScale is issue 12's scaling table: for each backend:size in
// PSKVAULT_SCALE (default soft:1000,soft:10000,soft:100000,soft:1000000,
// tpm:10000,pkcs11:10000) it builds a vault of that many records, starts
// the real daemon on it and measures, through the admin socket and the Go
// client, what docs/BENCHMARKS.md "Scaling (issue 12)" tabulates. Run it
// with -benchtime 1x: every figure is a b.ReportMetric of one run.
//
// The records are written before the daemon starts by vault.ImportBatch
// in this process, on the vault's own code and format, with real backend
// keys (identities dev-NNNNNNN, pairwise node-a to node-b, random keys), in
// batches of 10,000.
func BenchmarkScale(b *testing.B) {
	spec := os.Getenv("PSKVAULT_SCALE")
	if spec == "" {
		spec = "soft:1000,soft:10000,soft:100000,soft:1000000,tpm:10000,pkcs11:10000"
	}
	// The SoftHSM2 token is made here: a sub-benchmark's temporary
	// directory has a '=' in its name, which softhsm2.conf cannot hold.
	var p11 string
	if strings.Contains(spec, "pkcs11:") {
		p11 = pkcs11test.Require(b, "pskvault-scale").URI()
	}
	for _, s := range strings.Split(spec, ",") {
		backend, size, ok := strings.Cut(s, ":")
		n, err := strconv.Atoi(size)
		if !ok || err != nil || n < 1000 {
			b.Fatalf("PSKVAULT_SCALE entry %q: want BACKEND:N (N >= 1000)", s)
		}
		b.Run(fmt.Sprintf("%s/records=%d", backend, n), func(b *testing.B) {
			uri := backend
			switch backend {
			case "soft":
			case "tpm":
				uri = swtpmsim.Start(b).URI()
			case "pkcs11":
				uri = p11
			default:
				b.Fatalf("backend %q: want soft, tpm or pkcs11", backend)
			}
			for range b.N {
				scaleRun(b, uri, n)
			}
		})
	}
}

// scaleDaemon is the daemon under measurement.
type scaleDaemon struct {
	b           *testing.B
	state, sock string
	cmd         *exec.Cmd
	log         bytes.Buffer
}

func (d *scaleDaemon) cli(args ...string) {
	d.b.Helper()
	out, err := exec.Command(binary, append([]string{"--state-dir", d.state, "--socket", d.sock}, args...)...).CombinedOutput()
	if err != nil {
		d.b.Fatalf("%v: %v: %s", args, err, out)
	}
}

// start starts the daemon and returns how long until it answered status.
func (d *scaleDaemon) start(c *client.Client) time.Duration {
	d.b.Helper()
	d.cmd = exec.Command(binary, "--state-dir", d.state, "--socket", d.sock, "serve", "--log-level", "warn")
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	t0 := time.Now()
	if err := d.cmd.Start(); err != nil {
		d.b.Fatal(err)
	}
	for {
		if conn, err := net.Dial("unix", d.sock); err == nil {
			conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := c.Status(ctx)
			cancel()
			if err == nil {
				return time.Since(t0)
			}
		}
		if time.Since(t0) > 10*time.Minute {
			d.b.Fatalf("daemon did not start: %s", d.log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (d *scaleDaemon) stop() {
	if d.cmd != nil {
		d.cmd.Process.Signal(os.Interrupt)
		d.cmd.Wait()
		d.cmd = nil
	}
}

// rss returns the daemon's resident set and its peak, MiB, and the two
// parts of the resident set: anon, the process's own memory (heap,
// stacks), and file, the pages of mapped files resident now (vault.db's
// mapping: page cache the kernel reclaims under pressure, munlock.go).
func (d *scaleDaemon) rss() (now, peak, anon, file float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		d.b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			now = float64(kb) / 1024
		case "VmHWM":
			peak = float64(kb) / 1024
		case "RssAnon":
			anon = float64(kb) / 1024
		case "RssFile":
			file = float64(kb) / 1024
		}
	}
	return now, peak, anon, file
}

func scaleKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

func devID(i int) []byte { return fmt.Appendf(nil, "dev-%07d", i) }

// scaleFill writes n records with the vault's own batch import, in
// process, in batches of 10,000 (on hardware, whose calls wait on the
// device, in 8 batches at once, which overlaps the device's work).
func scaleFill(b *testing.B, state string, n int, hw bool) time.Duration {
	ctx := context.Background()
	v, err := vault.Open(ctx, state)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	size, par := 10_000, 1
	if hw {
		size, par = 1000, 8
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, par)
	var mu sync.Mutex
	next := 0
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				from := next
				next = min(next+size, n)
				to := next
				mu.Unlock()
				if from == to {
					return
				}
				i := from
				_, err := v.ImportBatch(ctx, 0, func() (*vault.ImportRequest, error) {
					if i == to {
						return nil, io.EOF
					}
					r := &vault.ImportRequest{Identity: devID(i), Key: scaleKey(), Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b"}
					i++
					return r, nil
				})
				if err != nil {
					errs <- fmt.Errorf("fill %d-%d: %w", from, to, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}

// pct returns the p-th percentile of ds (sorted in place).
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(float64(len(ds))*p/100+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// timed runs op up to n times, or until budget is spent (at least min
// times), and returns each run's duration.
func timed(b *testing.B, n, minRuns int, budget time.Duration, op func(i int) error) []time.Duration {
	var ds []time.Duration
	start := time.Now()
	for i := 0; i < n && (i < minRuns || time.Since(start) < budget); i++ {
		t0 := time.Now()
		if err := op(i); err != nil {
			b.Fatalf("op %d: %v", i, err)
		}
		ds = append(ds, time.Since(t0))
	}
	return ds
}

func scaleRun(b *testing.B, uri string, n int) {
	root := b.TempDir()
	d := &scaleDaemon{b: b, state: filepath.Join(root, "state"), sock: filepath.Join(root, "run", "admin", "pskvault.sock")}
	defer d.stop()
	d.cli("init", "--node-id", "node-a", "--backend", uri)
	hw := !strings.HasPrefix(uri, "soft")
	fillTime := scaleFill(b, d.state, n, hw)
	b.Logf("%s, %d records: written offline in %.1f s (%.0f/s)", uri, n, fillTime.Seconds(), float64(n)/fillTime.Seconds())

	c := client.New(d.sock)
	defer c.Close()
	ctx := context.Background()
	startTime := d.start(c)
	rssStart, _, anonStart, _ := d.rss()
	b.ReportMetric(startTime.Seconds(), "start-s")
	b.ReportMetric(rssStart, "rss-start-MiB")
	b.ReportMetric(anonStart, "rss-anon-start-MiB")
	// The daemon answers at once; in the background it maps vault.db's
	// pages (vault/warm.go). Derivations are measured once that is done:
	// its mapped pages (RssFile) stopped growing for a second.
	t0 := time.Now()
	for last, still := -1.0, 0; still < 4 && time.Since(t0) < 2*time.Minute; time.Sleep(250 * time.Millisecond) {
		_, _, _, file := d.rss()
		if file == last {
			still++
		} else {
			last, still = file, 0
		}
	}
	b.ReportMetric(time.Since(t0).Seconds()-1, "warm-s")

	// Derive, idle: random records, one client.
	nDerive := 3000
	if hw {
		nDerive = 1000
	}
	derive := func(i int) error {
		var x [4]byte
		rand.Read(x[:])
		// The lower half: deletes, revokes, rotates and the storm take
		// records from the top.
		id := devID(int(uint32(x[0])<<24|uint32(x[1])<<16|uint32(x[2])<<8|uint32(x[3])) % (n / 2))
		_, err := c.Derive(ctx, client.DeriveRequest{Identity: id, Protocol: "tls1.3", KDF: "sha256"})
		return err
	}
	timed(b, 200, 200, time.Hour, derive) // warm-up
	idle := timed(b, nDerive, nDerive, time.Hour, derive)
	idle50, idle99 := pct(idle, 50), pct(idle, 99)
	b.ReportMetric(us(idle50), "derive-p50-µs")
	b.ReportMetric(us(idle99), "derive-p99-µs")

	// Status.
	st := timed(b, 100, 100, time.Hour, func(int) error { _, err := c.Status(ctx); return err })
	b.ReportMetric(ms(pct(st, 50)), "status-p50-ms")

	// Single imports at this size.
	nSingle := 300
	if hw {
		nSingle = 100
	}
	t0 = time.Now()
	single := timed(b, nSingle, 20, 60*time.Second, func(i int) error {
		_, err := c.Import(ctx, client.PSKSpec{Identity: fmt.Appendf(nil, "single-%05d", i), ClientNode: "node-a", ServerNode: "node-b"}, scaleKey())
		return err
	})
	b.ReportMetric(float64(len(single))/time.Since(t0).Seconds(), "single-import/s")

	// One batch at this size: min(n, 10,000) entries (1,000 on hardware,
	// whose key stores are 100 times slower).
	nBatch := min(n, 10_000)
	if hw {
		nBatch = 1000
	}
	k := 0
	t0 = time.Now()
	res, err := c.ImportBatch(ctx, func() (*client.BatchEntry, error) {
		if k == nBatch {
			return nil, io.EOF
		}
		k++
		return &client.BatchEntry{Spec: client.PSKSpec{Identity: fmt.Appendf(nil, "batch-%07d", k), ClientNode: "node-a", ServerNode: "node-b"}, Key: scaleKey()}, nil
	})
	if err != nil || res.Imported != nBatch {
		b.Fatalf("batch import: %v", err)
	}
	b.ReportMetric(float64(nBatch)/time.Since(t0).Seconds(), "batch-import/s")

	// Delete, revoke, rotate: up to 200 each (N/8 below 1,600 records; at
	// least 5, 120 s each at most), on records of the offline set's upper
	// half.
	var mu sync.Mutex
	next := n - 1
	pick := func() []byte {
		mu.Lock()
		defer mu.Unlock()
		if next < n/2 {
			return nil
		}
		id := devID(next)
		next--
		return id
	}
	for _, op := range []struct {
		name string
		f    func(id []byte) error
	}{
		{"delete", func(id []byte) error { return c.Delete(ctx, id) }},
		{"revoke", func(id []byte) error { _, err := c.Revoke(ctx, id, "scale bench"); return err }},
		{"rotate", func(id []byte) error {
			_, key, err := c.Rotate(ctx, id, client.RotateSpec{NewIdentity: append(id, ".g2"...)}, nil)
			clear(key)
			return err
		}},
	} {
		ds := timed(b, min(200, n/8), 5, 120*time.Second, func(int) error {
			id := pick()
			if err := op.f(id); err != nil {
				return fmt.Errorf("%s %s: %w", op.name, id, err)
			}
			return nil
		})
		b.ReportMetric(ms(pct(ds, 50)), op.name+"-p50-ms")
		b.ReportMetric(ms(pct(ds, 99)), op.name+"-p99-ms")
		b.ReportMetric(float64(len(ds)), op.name+"-samples")
	}

	// Full list and check, a page at a time, as the CLI does.
	t0 = time.Now()
	listed := 0
	for _, err := range c.PSKs(ctx, 0) {
		if err != nil {
			b.Fatal(err)
		}
		listed++
	}
	b.ReportMetric(time.Since(t0).Seconds(), "list-s")
	t0 = time.Now()
	checked, cursor := 0, ""
	for {
		r, err := c.CheckPage(ctx, cursor, 0)
		if err != nil {
			b.Fatal(err)
		}
		checked += len(r.PSKs)
		if cursor = r.NextCursor; cursor == "" {
			break
		}
	}
	b.ReportMetric(time.Since(t0).Seconds(), "check-s")
	if listed < n || checked != listed {
		b.Fatalf("listed %d, checked %d of at least %d records", listed, checked, n)
	}
	rssAfter, peak, anonAfter, fileAfter := d.rss()
	b.ReportMetric(rssAfter, "rss-after-list-check-MiB")
	b.ReportMetric(anonAfter, "rss-anon-after-list-check-MiB")
	b.ReportMetric(fileAfter, "rss-file-after-list-check-MiB")
	b.ReportMetric(peak, "rss-peak-MiB")

	// Derive while a delete/import storm runs on the admin socket.
	storm := client.New(d.sock)
	defer storm.Close()
	var stop atomic.Bool
	var stormOps atomic.Int64
	var stormErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			if id := pick(); i%2 == 0 && id != nil {
				if err := storm.Delete(ctx, id); err != nil {
					stormErr = err
					return
				}
			} else if _, err := storm.Import(ctx, client.PSKSpec{Identity: fmt.Appendf(nil, "storm-%06d", i), ClientNode: "node-a", ServerNode: "node-b"}, scaleKey()); err != nil {
				stormErr = err
				return
			}
			stormOps.Add(1)
		}
	}()
	t0 = time.Now()
	busy := timed(b, nDerive, nDerive, time.Hour, derive)
	stop.Store(true)
	wg.Wait()
	if stormErr != nil && !errors.Is(stormErr, context.Canceled) {
		b.Fatalf("storm: %v", stormErr)
	}
	b.ReportMetric(us(pct(busy, 50)), "storm-derive-p50-µs")
	b.ReportMetric(us(pct(busy, 99)), "storm-derive-p99-µs")
	b.ReportMetric(float64(pct(busy, 99))/float64(idle99), "storm-p99/idle-p99")
	b.ReportMetric(float64(stormOps.Load())/time.Since(t0).Seconds(), "storm-ops/s")
}
