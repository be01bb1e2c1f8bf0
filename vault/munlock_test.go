package vault_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// TestMappingNotLocked: in a process that locks its memory as the daemon
// does (mlockall, MCL_FUTURE | MCL_ONFAULT), reading every record of a
// vault does not leave vault.db's pages locked in RAM (munlock.go): the
// locked memory stays far below the file's size. It runs in a child
// process, since mlockall is for the whole process.
func TestMappingNotLocked(t *testing.T) {
	if dir := os.Getenv("PSKVAULT_TEST_MLOCK_DIR"); dir != "" {
		mlockChild(t, dir)
		return
	}
	dir := filepath.Join(t.TempDir(), "v")
	if err := vault.Init(bg, dir, vault.Config{NodeID: "node-a"}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(bg, dir)
	if err != nil {
		t.Fatal(err)
	}
	ps := make([]*vault.PSK, 30_000)
	for i := range ps {
		ps[i] = &vault.PSK{
			Identity: fmt.Appendf(nil, "device-%07d", i), Hash: importer.SHA256, KeyBits: 256,
			ClientNode: "node-a", ServerNode: "node-b", Targets: vault.AllTargets,
			Created: time.Now().UTC().Truncate(time.Second), State: vault.StateActive,
			Origin: "imported", Backend: "soft", Policy: vault.Policy{Generation: 1, Provenance: strings.Repeat("p", 200)},
		}
	}
	if err := vault.PutRecords(v, ps); err != nil {
		t.Fatal(err)
	}
	v.Close()
	st, err := os.Stat(filepath.Join(dir, "vault.db"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestMappingNotLocked$", "-test.v")
	cmd.Env = append(os.Environ(), "PSKVAULT_TEST_MLOCK_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, rest, ok := strings.Cut(string(out), "Locked-kB=")
	if !ok {
		t.Fatalf("child printed no Locked:\n%s", out)
	}
	lck, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if lck*1024 > st.Size()/2 {
		t.Fatalf("after reading every record, %d KiB locked; vault.db is %d KiB: its mapping stays locked", lck, st.Size()/1024)
	}
	t.Logf("locked %d KiB after reading a %d KiB vault.db", lck, st.Size()/1024)
}

func mlockChild(t *testing.T, dir string) {
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
		t.Skipf("mlockall not allowed here: %v", err)
	}
	v, err := vault.Open(bg, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	n := 0
	if err := v.Each(func(*vault.PSK) bool { n++; return true }); err != nil || n != 30_000 {
		t.Fatalf("read %d records: %v", n, err)
	}
	// The Locked: lines of vault.db's mappings in smaps: its resident
	// pages that are locked.
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	db, _ := filepath.EvalSymlinks(filepath.Join(dir, "vault.db"))
	locked, in, seen := 0, false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 6 && strings.Contains(fields[0], "-"):
			in = fields[len(fields)-1] == db
			seen = seen || in
		case in && len(fields) == 3 && fields[0] == "Locked:":
			kb, _ := strconv.Atoi(fields[1])
			locked += kb
		}
	}
	if !seen {
		t.Fatalf("no mapping of %s found", db)
	}
	fmt.Printf("Locked-kB=%d\n", locked)
}
