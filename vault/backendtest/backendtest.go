// Package backendtest is the conformance suite every vault.Backend runs
// against its real device, token or store: stored keys compute the same
// HMAC as crypto/hmac, RFC 9258 derivation through the backend matches the
// in-memory importer, concurrent use is safe, and deleted keys are gone.
package backendtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/pskvault/pskvault/importer"
	"github.com/pskvault/pskvault/vault"
)

// Run exercises b. It stores and deletes a few keys of its own.
func Run(t *testing.T, b vault.Backend) {
	t.Helper()
	ctx := context.Background()
	info := b.Info()
	if info.Name == "" {
		t.Fatal("Info().Name is empty")
	}
	for _, h := range info.Hashes {
		t.Run(h.String(), func(t *testing.T) {
			epsk := make([]byte, 32)
			rand.Read(epsk)
			prk, err := importer.Extract(h, epsk)
			if err != nil {
				t.Fatal(err)
			}
			want := append([]byte{}, prk...)
			handle, err := b.StoreKey(ctx, vault.StoreRequest{PRK: prk, Hash: h, Label: "backendtest-" + h.String()})
			if err != nil {
				t.Fatalf("StoreKey: %v", err)
			}
			clear(prk)
			if bytes.Contains(handle, want) {
				t.Fatal("handle contains the PRK in clear")
			}
			key := vault.KeyRef{Handle: handle, Hash: h}
			defer b.DeleteKey(ctx, key)

			data := []byte("backendtest data")
			got, err := b.HMAC(ctx, key, data)
			if err != nil {
				t.Fatalf("HMAC: %v", err)
			}
			exp, _ := importer.SoftwareMAC(h, want)(data)
			if !bytes.Equal(got, exp) {
				t.Fatal("backend HMAC differs from crypto/hmac")
			}

			for _, kdf := range []importer.KDF{importer.HKDFSHA256, importer.HKDFSHA384} {
				for _, proto := range []importer.Protocol{importer.TLS13, importer.DTLS13} {
					id := importer.Identity{External: []byte("client-1"), Context: []byte("ctx"), Protocol: proto, KDF: kdf}
					plan, err := importer.NewPlan(h, id)
					if err != nil {
						t.Fatal(err)
					}
					ipskx, err := plan.Expand(func(d []byte) ([]byte, error) { return b.HMAC(ctx, key, d) })
					if err != nil {
						t.Fatalf("Expand through backend: %v", err)
					}
					_, ref, _ := importer.Import(h, epsk, id)
					if !bytes.Equal(ipskx, ref) {
						t.Fatalf("%v/%v/%v: backend derivation differs from the in-memory importer", h, proto, kdf)
					}
				}
			}

			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := 0; i < 20; i++ {
						d := []byte(fmt.Sprintf("g%d-i%d", g, i))
						got, err := b.HMAC(ctx, key, d)
						if err != nil {
							errs <- err
							return
						}
						exp, _ := importer.SoftwareMAC(h, want)(d)
						if !bytes.Equal(got, exp) {
							errs <- errors.New("concurrent HMAC mismatch")
							return
						}
					}
				}(g)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("concurrent HMAC: %v", err)
			}

			if err := b.DeleteKey(ctx, key); err != nil {
				t.Fatalf("DeleteKey: %v", err)
			}
			if err := b.DeleteKey(ctx, key); err != nil {
				t.Fatalf("second DeleteKey must not fail: %v", err)
			}
		})
	}
	t.Run("unknown-param-refused", func(t *testing.T) {
		prk := make([]byte, 32)
		rand.Read(prk)
		_, err := b.StoreKey(ctx, vault.StoreRequest{PRK: prk, Hash: importer.SHA256, Label: "x", Params: map[string]string{"no-such-param": "1"}})
		if err == nil {
			t.Fatal("StoreKey accepted an unknown parameter")
		}
	})
}
