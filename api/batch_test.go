package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pskvault/pskvault/api/wire"
	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/vault"
)

// serveVault serves v on a fresh socket of kind sock and returns a client.
func serveVault(t *testing.T, v *vault.Vault, sock Socket) (*client.Client, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), string(sock)+".sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ss, _, err := NewServerWith(v, Options{}).Serve(l, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	c := client.New(path)
	t.Cleanup(c.Close)
	return c, path
}

func batchKey(i int) []byte {
	sum := sha256.Sum256(fmt.Appendf(nil, "api batch test key %d", i))
	return sum[:]
}

func batchEntry(i int) *client.BatchEntry {
	return &client.BatchEntry{Spec: client.PSKSpec{Identity: fmt.Appendf(nil, "dev-%05d", i), ClientNode: "node-a", ServerNode: "node-b"}, Key: batchKey(i)}
}

// entries yields n entries from f, then io.EOF.
func entries(n int, f func(i int) *client.BatchEntry) func() (*client.BatchEntry, error) {
	i := 0
	return func() (*client.BatchEntry, error) {
		if i == n {
			return nil, io.EOF
		}
		i++
		return f(i - 1), nil
	}
}

func TestBatchImportAndPages(t *testing.T) {
	v := testVault(t) // holds "fz"
	c, _ := serveVault(t, v, SocketAdmin)
	ctx := context.Background()
	res, err := c.ImportBatch(ctx, entries(1050, batchEntry))
	if err != nil {
		t.Fatal(err)
	}
	if res.Imported != 1050 || len(res.PSKs) != 1050 || v.Count() != 1051 {
		t.Fatalf("imported %d (%d listed), vault holds %d; want 1050, 1051", res.Imported, len(res.PSKs), v.Count())
	}
	if res.PSKs[7].IdentityHex != fmt.Sprintf("%x", "dev-00007") || len(res.PSKs[7].KCV) != 2*vault.KCVLen {
		t.Fatalf("entry 7 answered as %+v", res.PSKs[7])
	}

	// Pages: the cap, the cursor round trip, the end.
	page, next, err := c.ListPage(ctx, "", 5000)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != wire.MaxPageLimit || next == "" {
		t.Fatalf("limit 5000: %d records, next %q; want the cap %d and a cursor", len(page), next, wire.MaxPageLimit)
	}
	rest, end, err := c.ListPage(ctx, next, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 51 || end != "" || rest[0].IdentityHex <= page[len(page)-1].IdentityHex {
		t.Fatalf("second page: %d records, next %q", len(rest), end)
	}
	all, err := c.List(ctx)
	if err != nil || len(all) != 1051 {
		t.Fatalf("List: %d records, %v", len(all), err)
	}
	rep, err := c.CheckPage(ctx, "", 10)
	if err != nil || len(rep.PSKs) != 10 || rep.NextCursor == "" {
		t.Fatalf("check page: %v", err)
	}
	full, err := c.Check(ctx)
	if err != nil || len(full.PSKs) != 1051 || full.NextCursor != "" {
		t.Fatalf("Check: %v", err)
	}
	// GET /v1/psks is the first page.
	hc := unixHTTP(serveSock(t, v))
	resp, err := hc.Get("http://pskvault/v1/psks")
	if err != nil {
		t.Fatal(err)
	}
	var l PSKList
	decodeResp(t, resp, &l)
	if len(l.PSKs) != wire.MaxPageLimit || l.NextCursor == "" {
		t.Fatalf("GET /v1/psks: %d records, next %q", len(l.PSKs), l.NextCursor)
	}
}

func serveSock(t *testing.T, v *vault.Vault) string {
	_, path := serveVault(t, v, SocketAdmin)
	return path
}

func decodeResp(t *testing.T, resp *http.Response, out any) {
	t.Helper()
	defer resp.Body.Close()
	if err := decodeStrict(resp.Body, out); err != nil {
		t.Fatal(err)
	}
}

func TestBadCursor(t *testing.T) {
	v := testVault(t)
	c, _ := serveVault(t, v, SocketAdmin)
	ctx := context.Background()
	for _, cur := range []string{"!!!", "AA", wire.EncodeCursor([]byte("x"))[1:], "Ag"} {
		_, _, err := c.ListPage(ctx, cur, 1)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 400 || ce.Code != wire.CodeBadCursor {
			t.Errorf("list cursor %q: %v, want 400 %s", cur, err, wire.CodeBadCursor)
		}
		_, err = c.CheckPage(ctx, cur, 1)
		if !errors.As(err, &ce) || ce.Status != 400 || ce.Code != wire.CodeBadCursor {
			t.Errorf("check cursor %q: %v, want 400 %s", cur, err, wire.CodeBadCursor)
		}
	}
	if _, _, err := c.ListPage(ctx, "", -1); err == nil {
		t.Error("negative limit accepted")
	}
}

// TestBatchRefused: one bad entry and nothing is imported; the answer
// names every bad entry by index, with the code a single import gets.
func TestBatchRefused(t *testing.T) {
	v := testVault(t)
	c, _ := serveVault(t, v, SocketAdmin)
	ctx := context.Background()
	_, err := c.ImportBatch(ctx, entries(40, func(i int) *client.BatchEntry {
		e := batchEntry(i)
		switch i {
		case 17:
			e.Key = e.Key[:10] // too short
		case 30:
			e.Spec.Identity = []byte("dev-00003") // twice in the batch
		case 33:
			e.Key = batchKey(4) // one key twice
		case 35:
			e.Spec.Hash = "md5"
		}
		return e
	}))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != wire.CodeBatchRefused || ce.Status != http.StatusBadRequest {
		t.Fatalf("got %v, want 400 %s", err, wire.CodeBatchRefused)
	}
	want := []struct {
		i    int
		code string
	}{{17, CodeKeyTooShort}, {30, CodeExists}, {33, CodeKeyReused}, {35, CodeUnknownHash}}
	if len(ce.Entries) != len(want) || ce.Read != 40 {
		t.Fatalf("entries %+v after %d read", ce.Entries, ce.Read)
	}
	for k, w := range want {
		if ce.Entries[k].Index != w.i || ce.Entries[k].Code != w.code {
			t.Errorf("problem %d: %+v, want entry %d %s", k, ce.Entries[k], w.i, w.code)
		}
	}
	if v.Count() != 1 {
		t.Fatalf("refused batch changed the vault: %d records", v.Count())
	}
	// An error from the caller's source abandons the request: nothing.
	stop := errors.New("source failed")
	_, err = c.ImportBatch(ctx, func() func() (*client.BatchEntry, error) {
		n := 0
		return func() (*client.BatchEntry, error) {
			if n == 5 {
				return nil, stop
			}
			n++
			return batchEntry(100 + n), nil
		}
	}())
	if !errors.Is(err, stop) {
		t.Fatalf("abandoned batch: %v", err)
	}
}

// TestBatchCutOff: a body that ends inside an entry (the client gone)
// imports nothing, and the answer says where it broke.
func TestBatchCutOff(t *testing.T) {
	v := testVault(t)
	_, path := serveVault(t, v, SocketAdmin)
	var body []byte
	for i := range 3 {
		e := batchEntry(i)
		var err error
		body, err = wire.AppendBatchEntry(body, wire.PSKSpec{IdentityHex: fmt.Sprintf("%x", e.Spec.Identity), Client: "node-a", Server: "node-b"}, e.Key)
		if err != nil {
			t.Fatal(err)
		}
	}
	cut := body[:len(body)-10]
	c := dialRaw(t, path)
	head := "POST /v1/psks/import-batch HTTP/1.1\r\nHost: pskvault\r\nContent-Type: " + ContentTypeBatch + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	if _, err := c.Write(append([]byte(head), cut...)); err != nil {
		t.Fatal(err)
	}
	c.Conn.(*net.UnixConn).CloseWrite()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	var e Error
	decodeResp(t, resp, &e)
	if resp.StatusCode != 400 || e.Code != wire.CodeBatchRefused || len(e.Entries) != 1 || e.Entries[0].Index != 2 || !strings.Contains(e.Entries[0].Message, "ends inside entry 2") {
		t.Fatalf("cut-off body: %d %+v", resp.StatusCode, e)
	}
	if v.Count() != 1 {
		t.Fatalf("cut-off batch changed the vault: %d records", v.Count())
	}
}

// TestBatchNotOnDataSocket: the data socket, open to every local user,
// has no batch import, list or check.
func TestBatchNotOnDataSocket(t *testing.T) {
	v := testVault(t)
	c, _ := serveVault(t, v, SocketData)
	ctx := context.Background()
	_, err := c.ImportBatch(ctx, entries(3, batchEntry))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Fatalf("batch import on the data socket: %v, want 404", err)
	}
	if _, _, err := c.ListPage(ctx, "", 1); !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Fatalf("list on the data socket: %v, want 404", err)
	}
	if _, err := c.CheckPage(ctx, "", 1); !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Fatalf("check on the data socket: %v, want 404", err)
	}
	if v.Count() != 1 {
		t.Fatalf("vault changed: %d records", v.Count())
	}
}

// FuzzBatchReader: whatever the body, the entry reader returns entries
// within its buffer or a clean error, and never reads past a broken frame.
func FuzzBatchReader(f *testing.F) {
	var good []byte
	for i := range 2 {
		good, _ = wire.AppendBatchEntry(good, wire.PSKSpec{Identity: fmt.Sprint("id", i), Client: "a", Server: "b"}, batchKey(i))
	}
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte{0, 0, 0, 3, 1, 2, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(append(binary.BigEndian.AppendUint32(nil, 6), 0, 0, 0, 2, '{', '}'))
	f.Fuzz(func(t *testing.T, body []byte) {
		br := newBatchReader(bytes.NewReader(body))
		for n := 0; n < 1000; n++ {
			var spec PSKSpec
			key, err := br.next(&spec)
			if err == io.EOF {
				return
			}
			if errors.Is(err, errStream) {
				if !errors.Is(err, errBadRequest) {
					t.Fatalf("broken frame not a bad request: %v", err)
				}
				return
			}
			if err != nil {
				if !errors.Is(err, errBadRequest) {
					t.Fatalf("entry error not a bad request: %v", err)
				}
				continue
			}
			if len(key) > MaxBody {
				t.Fatalf("key of %d bytes", len(key))
			}
		}
	})
}

// BenchmarkBatchImportSocket: a batch of 10,000 fresh PSKs through the
// admin socket (client and server in this process); ns/op per batch.
func BenchmarkBatchImportSocket(b *testing.B) {
	v := testVault(b)
	path := filepath.Join(b.TempDir(), "admin.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	ss, _, err := NewServerWith(v, Options{}).Serve(l, SocketAdmin)
	if err != nil {
		b.Fatal(err)
	}
	defer ss.Close()
	c := client.New(path)
	defer c.Close()
	base := 0
	for b.Loop() {
		res, err := c.ImportBatch(context.Background(), entries(10_000, func(i int) *client.BatchEntry { return batchEntry(base + i) }))
		if err != nil || res.Imported != 10_000 {
			b.Fatal(err)
		}
		base += 10_000
	}
	b.ReportMetric(float64(base)/b.Elapsed().Seconds(), "psks/s")
}

// BenchmarkSingleImportSocket: one import per request through the admin
// socket (client and server in this process), for comparison with the
// batch.
func BenchmarkSingleImportSocket(b *testing.B) {
	v := testVault(b)
	path := filepath.Join(b.TempDir(), "admin.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	ss, _, err := NewServerWith(v, Options{}).Serve(l, SocketAdmin)
	if err != nil {
		b.Fatal(err)
	}
	defer ss.Close()
	c := client.New(path)
	defer c.Close()
	i := 0
	for b.Loop() {
		e := batchEntry(i)
		if _, err := c.Import(context.Background(), e.Spec, e.Key); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
