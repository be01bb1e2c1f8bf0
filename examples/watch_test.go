package examples

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
)

// watchResult is one GET /v1/watch as seen by a caller.
type watchResult struct {
	resp api.WatchResponse
	at   time.Time // when the answer arrived
	err  error
}

// startWatch long-polls the data socket with curl as cred, in the
// background; the answer arrives on the channel.
func startWatch(t *testing.T, n *node, cred *syscall.Credential, since string, wait int) <-chan watchResult {
	t.Helper()
	curl := requireTool(t, "curl")
	body := fmt.Sprintf(`{"since":%q,"wait_seconds":%d}`, since, wait)
	cmd := exec.Command(curl, "-s", "-f", "--max-time", "70", "--unix-socket", n.data,
		"-H", "Content-Type: application/json", "-d", body, "http://pskvault/v1/watch")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out := make(chan watchResult, 1)
	go func() {
		raw, err := cmd.Output()
		r := watchResult{at: time.Now(), err: err}
		if err == nil {
			r.err = json.Unmarshal(raw, &r.resp)
		}
		out <- r
	}()
	return out
}

// tokenOf is the caller's current token (a watch without since answers at once).
func tokenOf(t *testing.T, n *node, cred *syscall.Credential) string {
	t.Helper()
	r := <-startWatch(t, n, cred, "", 0)
	if r.err != nil || r.resp.Token == "" {
		t.Fatalf("watch as uid %d: %v", cred.Uid, r.err)
	}
	return r.resp.Token
}

// TestWatchTwoUIDs: uid A (65534) may derive the a-* PSKs, uid B (65533)
// the b-* ones. Every kind of change to A's PSKs (create, rotate, revoke,
// finalize, delete, expiry) wakes A's watch within a second, while B's
// watch, open all along, answers only when its wait ends, unchanged, with
// the same token as before: B learns nothing, not even that something
// changed. Then a change to B's PSK wakes B and not A.
func TestWatchTwoUIDs(t *testing.T) {
	requireRoot(t)
	userA := &syscall.Credential{Uid: 65534, Gid: 65534}
	userB := &syscall.Credential{Uid: 65533, Gid: 65534}
	cfg := filepath.Join(tempDir(t), "pskvault.toml")
	var rules []string
	for _, id := range []string{"a-1", "a-new", "a-exp", "b-1"} {
		u := "65534"
		if strings.HasPrefix(id, "b-") {
			u = "65533"
		}
		rules = append(rules, "[[psk]]", `identity = "`+id+`"`, `client = ["user:`+u+`"]`)
	}
	if err := os.WriteFile(cfg, []byte(strings.Join(rules, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := newNode(t, "node-a", "--config", cfg)
	keys := t.TempDir()
	create := func(id string, extra ...string) {
		a.cli(t, append([]string{"psk", "create", "--identity", id, "--client", "node-a", "--server", "node-b", "--out", filepath.Join(keys, id)}, extra...)...)
	}
	create("a-1")
	create("b-1")
	tokA, tokB := tokenOf(t, a, userA), tokenOf(t, a, userB)
	if tokA == tokB {
		t.Fatal("two callers got the same token")
	}

	const bWait = 20
	bStart := time.Now()
	bWatch := startWatch(t, a, userB, tokB, bWait)

	// Each change to A's view: A's watch, open before it, answers within
	// a second of the change with a new token.
	step := func(name string, change func()) {
		t.Helper()
		w := startWatch(t, a, userA, tokA, 30)
		time.Sleep(200 * time.Millisecond) // let curl connect and wait
		before := time.Now()
		change()
		done := time.Now()
		select {
		case r := <-w:
			if r.err != nil || !r.resp.Changed || r.resp.Token == tokA {
				t.Fatalf("%s: A's watch: err=%v changed=%v", name, r.err, r.resp.Changed)
			}
			if r.at.Before(before) {
				t.Fatalf("%s: A's watch answered before the change", name)
			}
			if d := r.at.Sub(done); d > time.Second {
				t.Fatalf("%s: A learned of the change %v after it", name, d)
			}
			// A multi-step change (rotate: new record, old one's
			// not-after, new one's generation) may wake the watch at an
			// intermediate step: continue from the settled view.
			tokA = tokenOf(t, a, userA)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: A's watch did not answer", name)
		}
	}
	step("create", func() { create("a-new") })
	step("rotate", func() {
		a.cli(t, "psk", "rotate", "--identity", "a-1", "--new-identity", "a-2", "--overlap", "1h", "--out", filepath.Join(keys, "a-2"))
	})
	step("revoke", func() { a.cli(t, "psk", "revoke", "--identity", "a-2", "--reason", "test") })
	step("finalize", func() { a.cli(t, "psk", "finalize", "--identity", "a-new") })
	step("delete", func() { a.cli(t, "psk", "delete", "--identity", "a-new") })
	var expiry time.Time
	step("create short-lived", func() {
		create("a-exp", "--valid-for", "3s")
		p, err := a.client.Get(t.Context(), []byte("a-exp"))
		if err != nil {
			t.Fatal(err)
		}
		expiry = p.NotAfter
	})
	// Expiry: no request at all, the clock alone changes A's view.
	w := startWatch(t, a, userA, tokA, 30)
	select {
	case r := <-w:
		if r.err != nil || !r.resp.Changed {
			t.Fatalf("expiry: A's watch: err=%v changed=%v", r.err, r.resp.Changed)
		}
		if r.at.Before(expiry) || r.at.Sub(expiry) > time.Second {
			t.Fatalf("expiry at %v: A's watch answered at %v", expiry, r.at)
		}
		tokA = r.resp.Token
	case <-time.After(10 * time.Second):
		t.Fatal("expiry: A's watch did not answer")
	}

	// B's watch saw none of it: it answers at the end of its wait,
	// unchanged, and its token is the one it had.
	select {
	case r := <-bWatch:
		if r.err != nil || r.resp.Changed || r.resp.Token != tokB {
			t.Fatalf("B's watch: err=%v changed=%v, token moved=%v", r.err, r.resp.Changed, r.resp.Token != tokB)
		}
		if e := r.at.Sub(bStart); e < (bWait-1)*time.Second {
			t.Fatalf("B's watch answered after %v, before its %d s wait ended: B learned that something changed", e, bWait)
		}
	case <-time.After(2 * bWait * time.Second):
		t.Fatal("B's watch never answered")
	}
	if tok := tokenOf(t, a, userB); tok != tokB {
		t.Fatal("B's token moved with A's changes")
	}

	// A change to B's PSK wakes B, and A's watch stays silent.
	aWatch := startWatch(t, a, userA, tokA, 3)
	bWatch = startWatch(t, a, userB, tokB, 30)
	time.Sleep(200 * time.Millisecond)
	aStart := time.Now().Add(-200 * time.Millisecond)
	a.cli(t, "psk", "revoke", "--identity", "b-1")
	done := time.Now()
	select {
	case r := <-bWatch:
		if r.err != nil || !r.resp.Changed || r.at.Sub(done) > time.Second {
			t.Fatalf("B's watch after revoking b-1: err=%v changed=%v after %v", r.err, r.resp.Changed, r.at.Sub(done))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("B's watch did not answer the revoke of b-1")
	}
	r := <-aWatch
	if r.err != nil || r.resp.Changed || r.resp.Token != tokA || r.at.Sub(aStart) < 2*time.Second {
		t.Fatalf("A's watch during B's change: err=%v changed=%v after %v", r.err, r.resp.Changed, r.at.Sub(aStart))
	}
}
