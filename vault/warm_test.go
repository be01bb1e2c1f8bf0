package vault_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// mappedKiB is the resident size (the pages mapped into this process) of
// the mappings of the file at path, from /proc/self/smaps.
func mappedKiB(t *testing.T, path string) int {
	path, _ = filepath.EvalSymlinks(path)
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kib, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 6 && strings.Contains(fields[0], "-"):
			in = fields[len(fields)-1] == path
		case in && len(fields) == 3 && fields[0] == "Rss:":
			n, _ := strconv.Atoi(fields[1])
			kib += n
		}
	}
	return kib
}

// TestMappingWarmed: after Open, a background walk maps every page of
// vault.db (warm.go), so derivations of records nobody read before take
// no page faults (a fault on a page-cache page costs about 30 µs on the
// 2-core VM: a random derive at 1M took 116 µs on a fresh mapping, 24 µs
// on a warm one).
func TestMappingWarmed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "v")
	if err := vault.Init(bg, dir, vault.Config{NodeID: "node-a"}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(bg, dir)
	if err != nil {
		t.Fatal(err)
	}
	const n = 30_000
	for b := range n / 10_000 {
		var reqs []*vault.ImportRequest
		for i := range 10_000 {
			r := pairReq(fmt.Sprintf("device-%07d", b*10_000+i), randKey(t, 32))
			reqs = append(reqs, &r)
		}
		if _, err := v.ImportBatch(bg, 0, feed(reqs...)); err != nil {
			t.Fatal(err)
		}
	}
	v.Close()
	v, err = vault.Open(bg, dir) // a new mapping: no page of it mapped yet
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	warmed := vault.WaitWarm(v, 20*time.Second)
	st, err := os.Stat(filepath.Join(dir, "vault.db"))
	if err != nil {
		t.Fatal(err)
	}
	// Every page of the file in use is mapped (about 58 % of this file;
	// the free pages bbolt keeps for reuse are not read).
	if got, size := mappedKiB(t, filepath.Join(dir, "vault.db")), int(st.Size()/1024); got < size/2 {
		t.Fatalf("%d KiB of vault.db's %d KiB mapped after the walk", got, size)
	}
	if !warmed {
		t.Fatal("the walk that maps vault.db did not finish in 20 s")
	}
	d, err := v.Derive(context.Background(), vault.DeriveRequest{Identity: []byte("device-0012345"), Target: vault.Target{Protocol: importer.TLS13, KDF: importer.HKDFSHA256}})
	if err != nil {
		t.Fatal(err)
	}
	clear(d.IPSKX)
}
