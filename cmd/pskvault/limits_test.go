package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pskvault/pskvault/api"
	"github.com/pskvault/pskvault/client"
	"github.com/pskvault/pskvault/importer"
)

// TestIdentityLimits runs RFC 9258's length limits through the real daemon
// at their exact boundaries: an external identity of 1..65535 bytes is
// accepted and one of 65536 refused; a derive, lookup or offers whose
// ImportedIdentity is exactly 65535 bytes is answered and one byte more is
// refused with identity_too_long. Every identity and context travels in a
// request body (a 65535-byte identity is 131070 hex digits, far more than
// a request line holds).
func TestIdentityLimits(t *testing.T) {
	a := newNode(t, "node-a", "soft")
	a.start()
	c := client.New(a.socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const max = importer.MaxIdentityLen // 65535
	big := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	spec := func(id []byte) client.PSKSpec {
		return client.PSKSpec{Identity: id, ClientNode: "node-a", ServerNode: "node-b", Targets: []string{"tls1.3/sha256"}}
	}
	wantCode := func(t *testing.T, what string, err error, code string) {
		t.Helper()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != code {
			t.Fatalf("%s: got %v, want code %s", what, err, code)
		}
	}
	derive := func(id, context []byte) (*client.Derived, error) {
		return c.Derive(ctx, client.DeriveRequest{Identity: id, Context: context, Protocol: "tls1.3", KDF: "sha256"})
	}

	t.Run("external identity 65535 bytes accepted, 65536 refused", func(t *testing.T) {
		id := big(max, 'x')
		p, err := c.Import(ctx, spec(id), randKey(t))
		if err != nil {
			t.Fatalf("import of a %d-byte identity: %v", max, err)
		}
		if !strings.Contains(strings.Join(p.PolicyWarning, "\n"), "no key can be derived") {
			t.Errorf("a %d-byte identity imported without the warning that it cannot be derived: %q", max, p.PolicyWarning)
		}
		got, err := c.Get(ctx, id)
		if err != nil || got.IdentityHex != p.IdentityHex {
			t.Fatalf("show of the %d-byte identity: %v", max, err)
		}
		// No ImportedIdentity can carry it: derive says so precisely.
		_, err = derive(id, nil)
		wantCode(t, "derive of a 65535-byte identity", err, api.CodeIdentityTooLong)
		if _, err := c.Revoke(ctx, id, "limit test"); err != nil {
			t.Fatalf("revoke of the %d-byte identity: %v", max, err)
		}
		if err := c.Delete(ctx, id); err != nil {
			t.Fatalf("delete of the %d-byte identity: %v", max, err)
		}
		_, err = c.Import(ctx, spec(big(max+1, 'x')), randKey(t))
		wantCode(t, "import of a 65536-byte identity", err, api.CodeIdentityTooLong)
		_, _, err = c.Create(ctx, spec(big(max+1, 'y')))
		wantCode(t, "create with a 65536-byte identity", err, api.CodeIdentityTooLong)
	})

	t.Run("ImportedIdentity of exactly 65535 bytes derives, looks up and survives a restart", func(t *testing.T) {
		id := big(max-8, 'i') // 2+65527+2+0+4 = 65535
		s := spec(id)
		s.ClientNode, s.ServerNode = "node-b", "node-a" // lookup is for servers
		if _, err := c.Import(ctx, s, randKey(t)); err != nil {
			t.Fatalf("import of a %d-byte identity: %v", len(id), err)
		}
		d, err := derive(id, nil)
		if err != nil {
			t.Fatalf("derive with a %d-byte ImportedIdentity: %v", max, err)
		}
		defer clear(d.IPSKX)
		if len(d.ImportedIdentity) != max {
			t.Fatalf("ImportedIdentity is %d bytes, want %d", len(d.ImportedIdentity), max)
		}
		l, err := c.Lookup(ctx, d.ImportedIdentity, []byte{}, "tls1.3", "sha256")
		if err != nil {
			t.Fatalf("lookup of a %d-byte wire identity: %v", max, err)
		}
		if !bytes.Equal(l.IPSKX, d.IPSKX) {
			t.Fatal("lookup and derive keys: mismatch")
		}
		clear(l.IPSKX)
		_, err = derive(id, []byte{1})
		wantCode(t, "derive with a 65536-byte ImportedIdentity", err, api.CodeIdentityTooLong)
		_, err = c.Lookup(ctx, append(bytes.Clone(d.ImportedIdentity), 0), nil, "", "")
		wantCode(t, "lookup of a 65536-byte wire identity", err, api.CodeIdentityTooLong)
		// bbolt keys stop at 32768 bytes: the record must survive a restart.
		a.stop()
		a.start()
		c.Close()
		d2, err := derive(id, nil)
		if err != nil {
			t.Fatalf("derive after restart: %v", err)
		}
		if !bytes.Equal(d2.IPSKX, d.IPSKX) {
			t.Fatal("key after restart: mismatch")
		}
		clear(d2.IPSKX)
	})

	t.Run("context filling the ImportedIdentity: derive and offers", func(t *testing.T) {
		id := []byte("c")
		if _, err := c.Import(ctx, spec(id), randKey(t)); err != nil {
			t.Fatal(err)
		}
		full := big(max-9, 0xc7) // 2+1+2+65526+4 = 65535
		d, err := derive(id, full)
		if err != nil {
			t.Fatalf("derive with a %d-byte context: %v", len(full), err)
		}
		clear(d.IPSKX)
		offers, err := c.Offers(ctx, "node-b", full, "tls1.3", "sha256")
		if err != nil {
			t.Fatalf("offers with a %d-byte context: %v", len(full), err)
		}
		found := false
		for _, o := range offers {
			found = found || bytes.Equal(o.ImportedIdentity, d.ImportedIdentity)
			clear(o.IPSKX)
		}
		if !found {
			t.Fatalf("offers with a %d-byte context did not offer the PSK", len(full))
		}
		_, err = derive(id, append(full, 0))
		wantCode(t, "derive with a 65527-byte context", err, api.CodeIdentityTooLong)
		_, err = c.Offers(ctx, "node-b", append(full, 0), "tls1.3", "sha256")
		wantCode(t, "offers with a 65527-byte context", err, api.CodeIdentityTooLong)
	})

	t.Run("create, rotate and finalize name 65535-byte identities", func(t *testing.T) {
		id := big(max, 'k')
		got, key, err := c.Create(ctx, spec(id))
		if err != nil {
			t.Fatalf("create with a %d-byte identity: %v", max, err)
		}
		clear(key)
		if !bytes.Equal(got, id) {
			t.Fatal("create returned another identity")
		}
		next := big(max, 'l')
		nid, key, err := c.Rotate(ctx, id, client.RotateSpec{NewIdentity: next, Overlap: time.Hour}, nil)
		if err != nil {
			t.Fatalf("rotate to a %d-byte identity: %v", max, err)
		}
		clear(key)
		if !bytes.Equal(nid, next) {
			t.Fatal("rotate returned another identity")
		}
		p, err := c.Get(ctx, next)
		if err != nil || p.Generation != 2 {
			t.Fatalf("new generation: %v %+v", err, p)
		}
	})

	t.Run("the CLI names a 65535-byte identity", func(t *testing.T) {
		// 131070 hex digits: just under Linux's 131072-byte limit on one
		// argument.
		h := fmt.Sprintf("%x", big(max, 'l'))
		out, code := a.run(nil, "psk", "show", "--identity-hex", h, "--json")
		if code != 0 || !strings.Contains(out, `"generation":2`) {
			t.Fatalf("psk show of a 65535-byte identity: exit %d: %.300s", code, out)
		}
	})
}

// randKey is a fresh random 256-bit EPSK.
func randKey(t *testing.T) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}
