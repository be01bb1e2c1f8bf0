package fleet

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testInventory(t testing.TB, links int) *Inventory {
	inv := &Inventory{Nodes: map[string]*Node{}}
	for _, id := range []string{"a", "b"} {
		pub, err := GenerateTPMParent()
		if err != nil {
			t.Fatal(err)
		}
		inv.Nodes[id] = &Node{ID: id, Kind: "tpm", ParentPub: pub}
	}
	inv.Links = []Link{{"a", "b"}, {"b", "a"}}[:links]
	return inv
}

var testPolicy = Policy{Targets: []string{"tls1.3/sha256"}, ValidFor: time.Hour}

// TestResumeAfterCrash covers both sides of the crash protocol
// deterministically: a generation recorded but not yet renamed is renamed
// by the next run and not issued again; bundles written but never recorded
// are discarded and their link issued afresh.
func TestResumeAfterCrash(t *testing.T) {
	out := t.TempDir()
	reg, err := OpenRegistry(filepath.Join(out, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	inv := testInventory(t, 2)
	now := time.Now()
	recorded, err := issue(out, inv, inv.Links[0], nil, testPolicy, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Record([]*Issue{recorded}); err != nil { // the crash: recorded, not renamed
		t.Fatal(err)
	}
	lost, err := issue(out, inv, inv.Links[1], nil, testPolicy, now) // the crash: written, never recorded
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(inv, reg, out, testPolicy, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Completed != 1 || sum.Discarded != 2 || sum.Issued != 1 || sum.Already != 1 {
		t.Fatalf("summary %+v, want 1 completed, 2 discarded, 1 issued, 1 already", sum)
	}
	latest, _ := reg.Latest()
	if got := latest[inv.Links[0].Name()]; string(got.Identity) != string(recorded.Identity) || got.Generation != 1 {
		t.Fatal("the recorded generation was issued again")
	}
	if got := latest[inv.Links[1].Name()]; string(got.Identity) == string(lost.Identity) {
		t.Fatal("the unrecorded generation was kept")
	}
	for _, n := range []string{"a", "b"} {
		files, _ := filepath.Glob(filepath.Join(out, n, "*"))
		if len(files) != 2 {
			t.Fatalf("node %s holds %v, want its two bundles", n, files)
		}
		for _, f := range files {
			if strings.HasSuffix(f, ".tmp") {
				t.Fatalf("%s left", f)
			}
		}
	}
}

// FuzzInventory: the inventory parser never panics and refuses what it
// cannot use with ErrInventory or a loader error.
func FuzzInventory(f *testing.F) {
	pub, err := GenerateTPMParent()
	if err != nil {
		f.Fatal(err)
	}
	load := func(p string) ([]byte, error) {
		switch p {
		case "pub":
			return pub, nil
		case "kek":
			return []byte("00112233445566778899aabbccddeeff\n"), nil
		}
		return nil, os.ErrNotExist
	}
	f.Add("node,a,tpm,pub\nnode,b,pkcs11,kek,lbl\nlink,a,b\n")
	f.Add("# c\n\nlink,a,a\n")
	f.Add("node,a,tpm,kek\n")
	f.Fuzz(func(t *testing.T, in string) {
		inv, err := ParseInventory(strings.NewReader(in), "inv", load)
		if err != nil {
			if !errors.Is(err, ErrInventory) && !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		for _, l := range inv.Links {
			if inv.Nodes[l.Client] == nil || inv.Nodes[l.Server] == nil || l.Client == l.Server {
				t.Fatalf("accepted link %s without its nodes", l.Name())
			}
		}
	})
}
