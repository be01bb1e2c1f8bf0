package vault_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// TestStats: the counts by state and the next expiry follow imports,
// expiries (by the clock alone), revocations, sweeps and deletes, and
// match a walk over every record at each step.
func TestStats(t *testing.T) {
	v := openVault(t, "node-a")
	ctx := context.Background()
	now := time.Now()
	clock := now
	vault.SetNow(v, func() time.Time { return clock })
	imp := func(id string, notAfter time.Time) {
		t.Helper()
		k := make([]byte, 32)
		rand.Read(k)
		if _, err := v.Import(ctx, vault.ImportRequest{Identity: []byte(id), Key: k, Hash: importer.SHA256, ClientNode: "node-a", ServerNode: "node-b", NotAfter: notAfter}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(stage string) {
		t.Helper()
		got := v.Stats()
		var want vault.Stats
		for _, p := range listAll(t, v) {
			switch {
			case p.State == vault.StateRevoked:
				want.Revoked++
			case p.Expired(clock):
				want.Expired++
			default:
				want.Active++
				if !p.NotAfter.IsZero() && (want.NextExpiry.IsZero() || p.NotAfter.Before(want.NextExpiry)) {
					want.NextExpiry = p.NotAfter
				}
			}
		}
		if !got.NextExpiry.Equal(want.NextExpiry) || got.Active != want.Active || got.Expired != want.Expired || got.Revoked != want.Revoked {
			t.Fatalf("%s: Stats() = %+v, the records say %+v", stage, got, want)
		}
	}
	check("empty")
	imp("forever", time.Time{})
	for i := range 100 {
		imp(fmt.Sprintf("e%03d", i), now.Add(time.Duration(i+1)*time.Hour).Truncate(time.Second))
	}
	check("imported")
	if s := v.Stats(); s.Active != 101 || !s.NextExpiry.Equal(now.Add(time.Hour).Truncate(time.Second)) {
		t.Fatalf("imported: %+v", s)
	}
	clock = now.Add(10*time.Hour + time.Minute) // e000..e009 past not_after
	check("10 expired")
	if s := v.Stats(); s.Expired != 10 || s.Active != 91 {
		t.Fatalf("10 expired: %+v", s)
	}
	// Revoke the next to expire and some far ones (stale heap entries).
	for _, id := range []string{"e010", "e050", "e099", "e003"} {
		if _, err := v.Revoke(ctx, []byte(id), "test"); err != nil {
			t.Fatal(err)
		}
	}
	check("revoked")
	if err := v.Delete(ctx, []byte("e011")); err != nil {
		t.Fatal(err)
	}
	check("deleted")
	if _, err := v.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	check("swept")
	// Churn leaves stale entries behind: the heap is rebuilt, and the
	// answer stays right. Scrapes run meanwhile (go test -race).
	stop := make(chan struct{})
	scraped := make(chan struct{})
	go func() {
		defer close(scraped)
		for {
			select {
			case <-stop:
				return
			default:
				v.Stats()
			}
		}
	}()
	defer func() { close(stop); <-scraped }()
	for i := 12; i < 99; i++ {
		if i == 50 {
			continue
		}
		if _, err := v.Revoke(ctx, []byte(fmt.Sprintf("e%03d", i)), "test"); err != nil && !errors.Is(err, vault.ErrRevoked) {
			t.Fatal(err)
		}
		if i%10 == 0 {
			check(fmt.Sprintf("revoked up to e%03d", i))
		}
	}
	check("all revoked")
	if s := v.Stats(); s.Active != 1 || !s.NextExpiry.IsZero() {
		t.Fatalf("all revoked: %+v", s)
	}
}
