package vault_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pskvault/pskvault/vault"
)

// TestFullDiskKeySlots: on a real full file system (a 2 MiB tmpfs), an
// import whose data key needs a new block of vault.keys fails with
// ErrNoSpace and changes nothing (no record, no slot left behind); every
// PSK imported before still derives, also after a reopen once space is
// back, and imports work again.
func TestFullDiskKeySlots(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("PSKVAULT_REQUIRE_SIMULATORS") != "" {
			t.Fatal("needs root to mount a small file system")
		}
		t.Skip("needs root to mount a small file system")
	}
	fs := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(fs, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", fs).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if exec.Command("umount", fs).Run() != nil {
			exec.Command("umount", "-l", fs).Run()
		}
	})
	dir := filepath.Join(fs, "v")
	if err := vault.Init(bg, dir, vault.Config{NodeID: "node-a", Backend: "soft"}); err != nil {
		t.Fatal(err)
	}
	v, _, closeV := reopen(t, dir)
	// 127 records fill vault.keys's first 4 KiB block (with the header).
	var keepers []keeper
	for i := range 4096/vault.SlotSize - 1 {
		r := pairReq(fmt.Sprintf("before-%03d", i), randKey(t, 32))
		if _, err := v.Import(bg, r); err != nil {
			t.Fatal(err)
		}
		if i%16 == 0 {
			keepers = append(keepers, keeper{r.Identity, derive(t, v, vault.DeriveRequest{Identity: r.Identity, Target: tls256}).IPSKX})
		}
	}
	keys := filepath.Join(dir, "vault.keys")
	if st, _ := os.Stat(keys); st.Size() != 4096 {
		t.Fatalf("vault.keys is %d bytes, want 4096", st.Size())
	}
	filler := filepath.Join(fs, "filler")
	f, err := os.OpenFile(filler, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
	f.Close()

	n := v.Count()
	_, err = v.Import(bg, pairReq("on-full-disk", randKey(t, 32)))
	if !vault.IsNoSpace(err) {
		t.Fatalf("import on a full disk: %v, want ErrNoSpace", err)
	}
	t.Logf("import on a full disk: %v", err)
	if _, err := v.Get([]byte("on-full-disk")); !errors.Is(err, vault.ErrNotFound) || v.Count() != n {
		t.Fatalf("the refused import left a record (%v, count %d, was %d)", err, v.Count(), n)
	}
	if st, _ := os.Stat(keys); st.Size() != 4096 {
		t.Fatalf("vault.keys changed to %d bytes", st.Size())
	}
	checkKeepers(t, v, keepers)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Import(bg, pairReq("after", randKey(t, 32))); err != nil {
		t.Fatalf("import once space is back: %v", err)
	}
	if err := closeV(); err != nil {
		t.Fatal(err)
	}
	v2, _, _ := reopen(t, dir)
	checkKeepers(t, v2, keepers)
	if v2.Count() != n+1 {
		t.Fatalf("after reopen %d records, want %d", v2.Count(), n+1)
	}
	derive(t, v2, vault.DeriveRequest{Identity: []byte("after"), Target: tls256})
}
