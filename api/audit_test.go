package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestAuditReopen: logrotate's rename-then-reopen while writers are busy
// loses no line and splits none: every line written is whole JSON in
// exactly one of the two files, the old file keeps what it had, and the new
// file at the old path is 0600.
func TestAuditReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	a, err := OpenAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Write(&AuditEntry{Op: "before", Result: "ok"})

	const writers, each = 8, 500
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range each {
				// Long reasons make a torn write visible as broken JSON.
				a.Write(&AuditEntry{Time: time.Now(), Op: "derive", Identity: fmt.Sprintf("%d-%d", w, i), Result: "ok", Reason: string(bytes.Repeat([]byte{'x'}, 512))})
			}
		}()
	}
	close(start)
	time.Sleep(time.Millisecond)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Reopen(path); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	a.Write(&AuditEntry{Op: "after", Result: "ok"})

	seen := map[string]int{}
	read := func(p string) []AuditEntry {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var out []AuditEntry
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e AuditEntry
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("%s: a line is not whole JSON: %v", p, err)
			}
			seen[e.Op+"/"+e.Identity]++
			out = append(out, e)
		}
		return out
	}
	old, cur := read(path+".1"), read(path)
	if len(old) == 0 || old[0].Op != "before" {
		t.Fatal("the rotated file lost its first line")
	}
	t.Logf("%d lines in the rotated file, %d in the new one", len(old), len(cur))
	if cur[len(cur)-1].Op != "after" {
		t.Fatal("the line written after the reopen is not at the end of the new file")
	}
	if len(old)+len(cur) != writers*each+2 {
		t.Fatalf("%d + %d lines, want %d", len(old), len(cur), writers*each+2)
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("line %s written %d times", k, n)
		}
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("new audit log: %v, mode %v", err, st.Mode())
	}
}

// TestAuditReopenFails: a path that cannot be opened leaves the log where
// it was.
func TestAuditReopenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := OpenAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Reopen(filepath.Join(t.TempDir(), "missing", "audit.log")); err == nil {
		t.Fatal("reopen in a missing directory succeeded")
	}
	a.Write(&AuditEntry{Op: "still", Result: "ok"})
	var buf bytes.Buffer
	a.Redirect(&buf)
	a.Write(&AuditEntry{Op: "redirected", Result: "ok"})
	raw, _ := os.ReadFile(path)
	if !bytes.Contains(raw, []byte(`"op":"still"`)) || bytes.Contains(raw, []byte("redirected")) || !bytes.Contains(buf.Bytes(), []byte(`"op":"redirected"`)) {
		t.Fatalf("file %q, redirected %q", raw, buf.String())
	}
}
